"""The body of ``POST /v1/chat/completions``: messages, tools, response formats, as OpenAI's clients send them."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from api.native.types import Body, Count, integral
from api.openai.types import _Sampling


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


# OpenAI's fields the gateway passes on as given (besides the unknown ones).
CHAT_PASSED_ON = frozenset(
    {"tools", "tool_choice", "parallel_tool_calls", "response_format", "logprobs", "top_logprobs", "logit_bias",
     "user", "metadata"}
)  # fmt: skip


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
