"""The request bodies of one deployment: the base models, with its configured limits
written into their OpenAPI schema (``maxLength``, ``maxItems``, ``maximum``).

The limits are enforced by `api.tenancy.guard.check_job`, whose messages name the setting;
here they are documented, so that a client (or a fuzzer) reading the schema knows
what will be refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, Field, create_model

from api.anthropic.messages.types import CountTokensRequest, MessageParam, MessagesRequest
from api.native.types import ChatCompletionRequest, Count, GenerateRequest, Message, Meta, integral
from api.openai.chat.types import OpenAIChatRequest, OpenAIMessage
from api.openai.completions.types import OpenAICompletionRequest
from api.openai.embeddings.types import EmbeddingsRequest, TokenId
from api.openai.responses.types import InputTokensRequest, ResponsesRequest
from shared.config import Config


@dataclass(frozen=True)
class RequestModels:
    generate: type[GenerateRequest]
    chat: type[ChatCompletionRequest]
    openai_chat: type[OpenAIChatRequest]
    openai_completion: type[OpenAICompletionRequest]
    responses: type[ResponsesRequest]
    embeddings: type[EmbeddingsRequest]
    input_tokens: type[InputTokensRequest]
    anthropic_messages: type[MessagesRequest]
    anthropic_count_tokens: type[CountTokensRequest]


def request_models(config: Config) -> RequestModels:
    """The request bodies, documenting `config`'s limits."""
    text = {"maxLength": config.max_prompt_chars}
    words = {"maxItems": config.max_stop_words, "items": {"type": "string", "maxLength": config.max_stop_word_chars}}
    tokens = {"maximum": config.max_tokens_limit}

    def limited(base: type[BaseModel], **fields: tuple[Any, Any]) -> Any:
        return create_model(base.__name__, __base__=base, __doc__=base.__doc__, **fields)  # type: ignore[call-overload]

    def field(base: type[BaseModel], name: str, extra: dict[str, Any], **changes: Any) -> tuple[Any, Any]:
        info = base.model_fields[name]
        keep: dict[str, Any] = {"description": info.description}
        if info.default_factory is not None:
            keep["default_factory"] = info.default_factory
        elif not info.is_required():
            keep["default"] = info.default
        return (changes.pop("annotation", info.annotation), Field(**keep, json_schema_extra=extra, **changes))

    meta = limited(
        Meta,
        # The spec's default (8096), unless the deployment allows less.
        tokens_limit=(
            Count,
            Field(
                min(Meta.model_fields["tokens_limit"].default, config.max_tokens_limit),
                description=Meta.model_fields["tokens_limit"].description,
                json_schema_extra=tokens,
            ),
        ),
        stop_words=field(Meta, "stop_words", words),
    )
    message = limited(Message, content=field(Message, "content", text))
    generate = limited(
        GenerateRequest,
        meta=(meta, Field(default_factory=meta)),
        content=field(GenerateRequest, "content", text),
    )
    chat = limited(
        ChatCompletionRequest,
        meta=(meta, Field(default_factory=meta)),
        messages=field(ChatCompletionRequest, "messages", {"maxItems": config.max_messages},
                       annotation=list[message], min_length=1),
    )  # fmt: skip
    choices = Annotated[int, Field(ge=1, le=config.max_choices), BeforeValidator(integral)]
    sampling = {
        "max_tokens": field(OpenAIChatRequest, "max_tokens", tokens),
        "stop": field(OpenAIChatRequest, "stop", {"maxItems": config.max_stop_words,
                                                       "maxLength": config.max_stop_word_chars}),
        "n": field(OpenAIChatRequest, "n", {}, annotation=choices),
    }  # fmt: skip
    openai_chat = limited(
        OpenAIChatRequest,
        **sampling,
        max_completion_tokens=field(OpenAIChatRequest, "max_completion_tokens", tokens),
        messages=field(OpenAIChatRequest, "messages", {"maxItems": config.max_messages},
                       annotation=list[OpenAIMessage], min_length=1),
    )  # fmt: skip
    # The prompt's length (its text, content parts included) is checked by guard.check_job.
    openai_completion = limited(
        OpenAICompletionRequest, **sampling,
        best_of=field(OpenAICompletionRequest, "best_of", {}, annotation=choices | None),
    )  # fmt: skip
    given = {"maxItems": config.max_messages, "maxLength": config.max_prompt_chars}
    responses = limited(
        ResponsesRequest,
        max_output_tokens=field(ResponsesRequest, "max_output_tokens", tokens),
        input=field(ResponsesRequest, "input", given),
    )
    input_tokens = limited(InputTokensRequest, input=field(InputTokensRequest, "input", given))
    text = Annotated[str, Field(min_length=1, max_length=config.max_prompt_chars)]
    tokens = Annotated[list[TokenId], Field(min_length=1, max_length=config.max_embedding_input_tokens)]
    many = config.max_embedding_inputs
    embeddings = limited(
        EmbeddingsRequest,
        input=(
            text
            | Annotated[list[text], Field(min_length=1, max_length=many)]  # type: ignore[valid-type]
            | tokens
            | Annotated[list[tokens], Field(min_length=1, max_length=many)],  # type: ignore[valid-type]
            Field(description=EmbeddingsRequest.model_fields["input"].description),
        ),
    )
    conversation = {"maxItems": config.max_messages}
    anthropic_messages = limited(
        MessagesRequest,
        max_tokens=field(MessagesRequest, "max_tokens", {"maximum": config.max_tokens_limit}, annotation=Count),
        messages=field(MessagesRequest, "messages", conversation, annotation=list[MessageParam], min_length=1),
        stop_sequences=field(MessagesRequest, "stop_sequences", words),
    )
    anthropic_count_tokens = limited(
        CountTokensRequest,
        messages=field(CountTokensRequest, "messages", conversation, annotation=list[MessageParam], min_length=1),
    )
    return RequestModels(generate, chat, openai_chat, openai_completion, responses, embeddings, input_tokens,
                         anthropic_messages, anthropic_count_tokens)  # fmt: skip
