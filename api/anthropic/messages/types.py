"""The bodies of ``POST /v1/messages`` and ``/v1/messages/count_tokens``, as Anthropic's
clients send them (the ``anthropic`` SDKs, Claude Code, LangChain's ``ChatAnthropic``).

Strict about the fields the gateway uses (types, ranges: each refused with a 400 naming
the field), lenient about the rest: fields Anthropic's API has and a model server has no
use for (``cache_control`` on blocks, ``service_tier``, ``container``, ``mcp_servers``,
``context_management``, ...) are accepted and ignored. A message's content blocks are
read by the translation (api/anthropic/messages/translate.py), which names the block at
fault."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from api.native.types import DEFAULT_PRIORITY, MODEL_PATTERN, Body, Count, integral

Blocks = Annotated[list[dict[str, Any]], Field(description="content blocks: text, image, document, tool_use, ...")]


class _Part(BaseModel):
    """A part of a request as Anthropic's clients send it: fields beyond these accepted, not used."""

    model_config = ConfigDict(strict=True, extra="allow")


class MessageParam(_Part):
    # "system": a system message among the others, as Claude Code sends one (its beta
    # "mid-conversation-system"): added to the system prompt.
    role: Literal["user", "assistant", "system"]
    content: str | Blocks


class ToolParam(_Part):
    """A tool the model may call: a client's own (``custom``) with its input's JSON
    Schema; Anthropic's server tools (web search, code execution, ...) are refused, as
    no model server runs them."""

    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    type: str | None = Field(None, description='"custom" (or none) for a client\'s tool')


class _Choice(_Part):
    disable_parallel_tool_use: bool | None = None


class AutoChoice(_Choice):
    type: Literal["auto"]


class AnyChoice(_Choice):
    type: Literal["any"]


class ToolChoiceNamed(_Choice):
    type: Literal["tool"]
    name: str = Field(min_length=1, max_length=128)


class NoneChoice(_Part):
    type: Literal["none"]


ToolChoice = Annotated[AutoChoice | AnyChoice | ToolChoiceNamed | NoneChoice, Field(discriminator="type")]


class ThinkingEnabled(_Part):
    type: Literal["enabled"]
    budget_tokens: Count


class ThinkingDisabled(_Part):
    type: Literal["disabled"]


class ThinkingAdaptive(_Part):
    type: Literal["adaptive"]


Thinking = Annotated[ThinkingEnabled | ThinkingDisabled | ThinkingAdaptive, Field(discriminator="type")]


class Metadata(_Part):
    user_id: str | None = Field(None, max_length=256, description="passed on as the chat request's user")


class JsonOutputFormat(_Part):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema", description="the answer's JSON Schema")


class OutputConfig(_Part):
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None
    format: JsonOutputFormat | None = None


class _Counted(Body):
    """What a message's prompt is made of (what count_tokens counts)."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(pattern=MODEL_PATTERN, description="a model of the registry (or one of its aliases)")
    messages: list[MessageParam] = Field(min_length=1)
    system: str | Blocks | None = Field(None, description="a string, or text blocks")
    tools: list[ToolParam] | None = Field(None, max_length=256)
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    chat_template_kwargs: dict[str, Any] | None = Field(
        None, description="not Anthropic's: vLLM's and llama.cpp's, passed on (thinking's are added to them)"
    )


class MessagesRequest(_Counted):
    """Body of ``POST /v1/messages``."""

    max_tokens: Count = Field(description="the most tokens to generate (thinking included)")
    stop_sequences: list[str] | None = None
    temperature: float | None = Field(None, ge=0, le=1, description="the model server's own default when omitted")
    top_p: float | None = Field(None, ge=0, le=1)
    top_k: Annotated[int, Field(ge=0), BeforeValidator(integral)] | None = None
    metadata: Metadata | None = None
    output_config: OutputConfig | None = None
    stream: bool = False
    priority: Annotated[int, Field(ge=0, le=9), BeforeValidator(integral)] = Field(
        DEFAULT_PRIORITY, description="not Anthropic's: 0 (batch) to 9 (most urgent), as meta.priority"
    )


class CountTokensRequest(_Counted):
    """Body of ``POST /v1/messages/count_tokens``: a message's request, without what
    generation alone uses (accepted and ignored: max_tokens, temperature, ...)."""


class TokenCount(BaseModel):
    """Answer of ``POST /v1/messages/count_tokens``."""

    input_tokens: int
