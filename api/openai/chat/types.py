"""OpenAI's request and response bodies, for the clients written against OpenAI's API."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from api.native.types import DEFAULT_PRIORITY, MODEL_PATTERN, Body, Count, JsonInt, integral

# Fields of a request the gateway does not know (a model server's own: vLLM's top_k,
# min_p, guided_json, chat_template_kwargs, ...) are passed on as given, up to this many
# (the body as a whole is bounded by MAX_BODY_BYTES).
MAX_EXTRA_FIELDS = 64


class _Message(Body):
    """One message as OpenAI's API takes it, passed on to the model server as given
    (fields the gateway does not know included)."""

    model_config = ConfigDict(strict=True, extra="allow")

    name: str | None = None

    def wire(self) -> dict[str, Any]:
        """The message as the model server gets it: as given, without the fields left out."""
        message = self.model_dump(exclude_none=True)
        if isinstance(getattr(self, "content", None), list):
            message["content"] = [part.model_dump(exclude_unset=True) for part in self.content]  # type: ignore[attr-defined]
        if getattr(self, "content", "") is None:
            message["content"] = None  # an assistant's tool calls alone, as OpenAI's SDK sends them
        return message


class ContentPart(BaseModel):
    """One part of a message's content (text, image_url, input_audio, file, ...): its
    type named, a text part's text a string; the rest passed on as given."""

    model_config = ConfigDict(
        strict=True,
        extra="allow",
        json_schema_extra={
            "if": {"properties": {"type": {"const": "text"}}},
            "then": {"required": ["text"], "properties": {"text": {"type": "string"}}},
        },
    )

    type: str = Field(min_length=1)
    text: str | None = None

    @model_validator(mode="after")
    def _text_has_text(self) -> ContentPart:
        if self.type == "text" and self.text is None:
            raise ValueError("a text part needs its text")
        return self


Content = str | list[ContentPart]  # text, or content parts


class TextMessage(_Message):
    role: Literal["system", "developer", "user"]
    content: Content


class AssistantMessage(_Message):
    role: Literal["assistant"]
    content: Content | None = None
    tool_calls: list[dict[str, Any]] | None = None


class ToolMessage(_Message):
    role: Literal["tool"]
    content: Content
    tool_call_id: str


class FunctionMessage(_Message):
    role: Literal["function"]  # OpenAI's older form of a tool's answer
    content: str | None = None
    name: str  # type: ignore[assignment]


OpenAIMessage = Annotated[TextMessage | AssistantMessage | ToolMessage | FunctionMessage, Field(discriminator="role")]


class FunctionDefinition(BaseModel):
    """A function a tool offers, as OpenAI's API takes it (fields beyond OpenAI's passed on)."""

    model_config = ConfigDict(strict=True, extra="allow")

    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = Field(None, description="its arguments, as a JSON Schema")
    strict: bool | None = None


class Tool(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(BaseModel):
    model_config = ConfigDict(strict=True)

    name: str = Field(min_length=1, max_length=64)


class NamedToolChoice(BaseModel):
    """``tool_choice`` naming the function to call."""

    model_config = ConfigDict(strict=True)

    type: Literal["function"]
    function: NamedFunction


class _Format(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


class TextFormat(_Format):
    type: Literal["text"]


class JsonObjectFormat(_Format):
    type: Literal["json_object"]


class JsonSchema(_Format):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class JsonSchemaFormat(_Format):
    type: Literal["json_schema"]
    json_schema: JsonSchema


class StructuralTagFormat(_Format):
    """vLLM's own kind: its fields passed on as given."""

    type: Literal["structural_tag"]


# ``response_format``: text, json_object, json_schema (its schema named), or vLLM's structural_tag.
ResponseFormat = Annotated[
    TextFormat | JsonObjectFormat | JsonSchemaFormat | StructuralTagFormat, Field(discriminator="type")
]


class _PassesOn(Body):
    """A request whose fields the gateway does not map itself go to the model server as given."""

    model_config = ConfigDict(strict=True, extra="allow")

    @model_validator(mode="after")
    def _bounded(self) -> _PassesOn:
        if len(self.model_extra or {}) > MAX_EXTRA_FIELDS:
            raise ValueError(f"at most {MAX_EXTRA_FIELDS} fields beyond OpenAI's own")
        return self

    def passed_on(self, names: frozenset[str]) -> dict[str, Any]:
        """The fields `names` given, and the fields the gateway does not know."""
        given = {name: _as_given(getattr(self, name)) for name in names if getattr(self, name) is not None}
        return {**given, **(self.model_extra or {})}


def _as_given(value: Any) -> Any:
    """A field's value as the client gave it (a checked part dumped back to what it was)."""
    if isinstance(value, BaseModel):
        return value.model_dump(by_alias=True, exclude_unset=True)
    if isinstance(value, list):
        return [_as_given(item) for item in value]
    return value


class _FallsBack(_PassesOn):
    """A request that may name the models to fall back to (LiteLLM's fields), each a
    model of the registry (404 naming the field otherwise)."""

    fallbacks: list[Annotated[str, Field(pattern=MODEL_PATTERN)]] | None = Field(
        None, max_length=8, description="not OpenAI's (LiteLLM's): models to fall back to, in turn; [] for none"
    )
    disable_fallbacks: bool = Field(False, description="not OpenAI's (LiteLLM's): no fallback model")

    def fallbacks_asked(self) -> list[str] | None:
        """The fallback models the request names ([] for none); None: its model's own."""
        return [] if self.disable_fallbacks else self.fallbacks


class _Sampling(_FallsBack):
    model: str | None = Field(
        None, pattern=MODEL_PATTERN, description="the model; the deployment's default when omitted"
    )
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: Count | None = None
    stop: str | list[str] | None = None
    seed: JsonInt | None = None
    n: Annotated[int, Field(ge=1, le=16), BeforeValidator(integral)] = 1
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    stream: bool = False
    priority: Annotated[int, Field(ge=0, le=9), BeforeValidator(integral)] = Field(
        DEFAULT_PRIORITY, description="not OpenAI's: 0 (batch) to 9 (most urgent), as meta.priority"
    )
    stream_options: dict[str, Any] | None = None
    user: str | None = None

    def meta(self, max_tokens: int | None) -> dict[str, Any]:
        """The job's ``meta``, as the spec's endpoints send it, plus the sampling parameters."""
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        sampling = {
            "top_p": self.top_p,
            "seed": self.seed,
            "n": self.n if self.n != 1 else None,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
        }
        return {
            "temperature": self.temperature,
            "tokens_limit": max_tokens,
            "stop_words": stop,
            "model": self.model,
            "priority": self.priority,
            "sampling": {k: v for k, v in sampling.items() if v is not None},
        }


# OpenAI's fields the gateway passes on as given (besides the unknown ones).
CHAT_PASSED_ON = frozenset(
    {"tools", "tool_choice", "parallel_tool_calls", "response_format", "logprobs", "top_logprobs", "logit_bias",
     "user", "metadata"}
)  # fmt: skip
COMPLETION_PASSED_ON = frozenset({"prompt", "echo", "suffix", "logprobs", "best_of", "logit_bias", "user"})


class OpenAIChatRequest(_Sampling):
    """Body of ``POST /v1/chat/completions``."""

    messages: list[OpenAIMessage] = Field(min_length=1)
    max_completion_tokens: Count | None = None
    tools: list[Tool] | None = Field(None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20), BeforeValidator(integral)] | None = None
    logit_bias: dict[str, float] | None = None
    metadata: dict[str, str] | None = None


class OpenAICompletionRequest(_Sampling):
    """Body of ``POST /v1/completions``: a raw completion (the model server's
    /v1/completions, no chat template), for base models, infilling and evaluations."""

    prompt: str | list[str] = Field(description="a prompt, or a list of prompts (choices per prompt, n each)")

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt_is_text(cls, value: Any) -> Any:
        if isinstance(value, list) and any(isinstance(item, int | list) for item in value):
            raise PydanticCustomError("token_ids", "a prompt given as token ids is not taken here: send its text")
        return value

    echo: bool | None = None
    suffix: str | None = None
    logprobs: Annotated[int, Field(ge=0, le=20), BeforeValidator(integral)] | None = None
    best_of: Annotated[int, Field(ge=1, le=16), BeforeValidator(integral)] | None = None
    logit_bias: dict[str, float] | None = None


class OpenAIError(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | int | None = None


class ErrorBody(BaseModel):
    error: OpenAIError


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "llm-api"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
