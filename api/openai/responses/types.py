"""The body of ``POST /v1/responses``, as OpenAI's clients send it."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    GetJsonSchemaHandler,
    Tag,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from api.native.types import DEFAULT_PRIORITY, MODEL_PATTERN, Body, Count, integral
from api.openai.types import _FallsBack

# Fields of OpenAI's Responses API that a model server behind chat completions has no
# use for: accepted, and not passed on (reasoning summaries, truncation, includes of
# built-in tools' results, service tiers, prompt caching keys, ...).
IGNORED = frozenset(
    {"reasoning", "truncation", "include", "service_tier", "prompt_cache_key", "prompt_cache_retention",
     "safety_identifier", "max_tool_calls", "top_logprobs", "stream_options", "conversation", "prompt"}
)  # fmt: skip


class _Item(BaseModel):
    """An input item or part as OpenAI's clients send it: fields beyond these kept as given."""

    model_config = ConfigDict(strict=True, extra="allow")


class InputText(_Item):
    type: Literal["input_text"]
    text: str


class OutputText(_Item):
    type: Literal["output_text"]
    text: str


class InputImage(_Item):
    type: Literal["input_image"]
    image_url: str = Field(min_length=1, description="a URL or a data: URL (file ids are not served)")
    detail: Literal["low", "high", "auto"] = "auto"


Part = Annotated[InputText | OutputText | InputImage, Field(discriminator="type")]


class MessageItem(_Item):
    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer", "assistant"]
    content: str | list[Part]


class FunctionCallItem(_Item):
    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    arguments: str


class FunctionCallOutputItem(_Item):
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: str | list[Part]


# The most a compaction item's sealed content holds (api/openai/responses/sealing.py):
# a summary of at most MAX_TOKENS_LIMIT tokens, sealed, is far less.
MAX_SEALED_CHARS = 1024 * 1024


class CompactionItem(_Item):
    """A conversation compacted by ``POST /v1/responses/compact``, given back as it came."""

    type: Literal["compaction"]
    encrypted_content: str = Field(min_length=1, max_length=MAX_SEALED_CHARS)
    id: str | None = None


ITEM_KINDS = ("message", "function_call", "function_call_output", "compaction")


def _item_kind(value: Any) -> str:
    kind = value.get("type", "message") if isinstance(value, dict) else getattr(value, "type", "message")
    return kind if kind in ITEM_KINDS else "unknown"


# An input item: a message (``type`` may be left out, as the SDKs' easy messages do), a
# function call the model made, its output, or a compacted conversation.
InputItem = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[CompactionItem, Tag("compaction")],
    Discriminator(_item_kind, custom_error_type="item_type",
                  custom_error_message="an item is a message, a function_call, a function_call_output or a compaction"),
]  # fmt: skip


class FunctionTool(_Item):
    """A function tool, as the Responses API gives it (built-in tools are not served)."""

    type: Literal["function"]
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class NamedFunction(BaseModel):
    model_config = ConfigDict(strict=True)

    type: Literal["function"]
    name: str = Field(min_length=1, max_length=64)


class TextFormat(_Item):
    type: Literal["text"]


class JsonObjectFormat(_Item):
    type: Literal["json_object"]


class JsonSchemaFormat(_Item):
    type: Literal["json_schema"]
    name: str = Field(min_length=1, max_length=64)
    schema_: dict[str, Any] = Field(alias="schema")
    description: str | None = None
    strict: bool | None = None


class TextConfig(_Item):
    format: Annotated[TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")] | None = None


# A response's id: its job's id (of the request's tenant, as every job's).
RESPONSE_ID_PATTERN = r"^resp_[A-Za-z0-9._:-]{1,123}$"


class ResponsesRequest(_FallsBack):
    """Body of ``POST /v1/responses``. Fields beyond OpenAI's go to the model server as
    given (a server's own sampling parameters), as for chat completions."""

    model: str | None = Field(None, pattern=MODEL_PATTERN, description="the model; the deployment's default")
    input: str | Annotated[list[InputItem], Field(min_length=1)] | None = Field(
        None, description="a string (one user message), or items: messages, function calls and their outputs"
    )
    instructions: str | None = None
    tools: list[FunctionTool] | None = Field(None, max_length=128, description="function tools")
    tool_choice: Literal["none", "auto", "required"] | NamedFunction | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = Field(None, description="{format: {type: text | json_object | json_schema}}")
    max_output_tokens: Count | None = None
    temperature: float | None = Field(None, ge=0, le=2, description="the model server's own default when omitted")
    top_p: float | None = Field(None, gt=0, le=1)
    metadata: dict[str, str] | None = Field(None, max_length=16)
    store: bool = True
    background: bool = False
    stream: bool = False
    previous_response_id: str | None = Field(None, pattern=RESPONSE_ID_PATTERN)
    user: str | None = None
    priority: Annotated[int, Field(ge=0, le=9), BeforeValidator(integral)] = Field(
        DEFAULT_PRIORITY, description="not OpenAI's: 0 (batch) to 9 (most urgent), as meta.priority"
    )
    # Accepted and not passed on (IGNORED).
    reasoning: Any = None
    truncation: Any = None
    include: Any = None
    service_tier: Any = None
    prompt_cache_key: str | None = Field(None, max_length=512, description="repeated in the response")
    prompt_cache_retention: Any = None
    safety_identifier: str | None = Field(None, max_length=64, description="repeated in the response")
    max_tool_calls: Any = None
    top_logprobs: Any = None
    stream_options: Any = None
    conversation: Any = None
    prompt: Any = None

    @model_validator(mode="after")
    def _something_to_answer(self) -> ResponsesRequest:
        if self.input is None and self.previous_response_id is None:
            raise ValueError("input: required, unless previous_response_id names the conversation to go on with")
        if self.background and not self.store:
            raise ValueError("background: a background response is stored (store: false cannot be polled)")
        return self

    @classmethod
    def __get_pydantic_json_schema__(cls, core: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        schema = handler.resolve_ref_schema(handler(core))
        given = {"not": {"type": "null"}}
        schema["anyOf"] = [
            {"required": ["input"], "properties": {"input": given}},
            {"required": ["previous_response_id"], "properties": {"previous_response_id": given}},
        ]
        schema["not"] = {
            "required": ["background", "store"],
            "properties": {"background": {"const": True}, "store": {"const": False}},
        }
        return schema


class InputTokensRequest(Body):
    """Body of ``POST /v1/responses/input_tokens``: what a response would be asked, whose
    input (with its instructions, tools, and the conversation it continues) is counted.
    Fields beyond these (a response's own: temperature, stream, ...) are accepted and
    have no part in the count."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(None, pattern=MODEL_PATTERN, description="the model; the deployment's default")
    input: str | Annotated[list[InputItem], Field(min_length=1)] | None = Field(
        None, description="a string (one user message), or items: messages, function calls and their outputs"
    )
    instructions: str | None = None
    tools: list[FunctionTool] | None = Field(None, max_length=128, description="function tools")
    previous_response_id: str | None = Field(None, pattern=RESPONSE_ID_PATTERN)
    # Accepted; no part in the count.
    tool_choice: Literal["none", "auto", "required"] | NamedFunction | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    reasoning: Any = None
    truncation: Any = None
    conversation: Any = None
    personality: Any = None

    @model_validator(mode="after")
    def _something_to_count(self) -> InputTokensRequest:
        if self.input is None and self.instructions is None and self.previous_response_id is None:
            raise ValueError("input: required, unless instructions or previous_response_id give what to count")
        return self

    @classmethod
    def __get_pydantic_json_schema__(cls, core: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        schema = handler.resolve_ref_schema(handler(core))
        given = {"not": {"type": "null"}}
        schema["anyOf"] = [
            {"required": [name], "properties": {name: given}}
            for name in ("input", "instructions", "previous_response_id")
        ]
        return schema


class InputTokenCount(BaseModel):
    """The answer of ``POST /v1/responses/input_tokens``."""

    object: Literal["response.input_tokens"] = "response.input_tokens"
    input_tokens: int
