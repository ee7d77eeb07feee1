"""Request and response bodies of the spec's endpoints, field for field."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import uuid4

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from shared.contract import DEFAULT_PRIORITY

# What a job_id and a model name may be made of (they end up in Redis keys, queue
# messages and log lines).
JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
MODEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,255}$"
Role = Literal["system", "user", "assistant", "tool"]


def integral(value: Any) -> Any:
    # JSON has one number type: 8.0 is an integer to JSON Schema, and is taken as one.
    return int(value) if isinstance(value, float) and value.is_integer() else value


JsonInt = Annotated[int, BeforeValidator(integral)]
# A count of at least 1 (the bound before the validator, or the schema shows "ge").
Count = Annotated[int, Field(ge=1), BeforeValidator(integral)]


def _nullable_optionals(schema: dict[str, Any], _cls: Any = None) -> None:
    """The schema says what `Body` accepts: null for any optional field."""
    required = set(schema.get("required", ()))
    for name, prop in (schema.get("properties") or {}).items():
        if name in required:
            continue
        variants = prop.get("anyOf")
        if variants is not None:
            if not any(variant.get("type") == "null" for variant in variants):
                variants.append({"type": "null"})
            continue
        kept = ("title", "description", "default", "examples")
        moved = {key: prop.pop(key) for key in list(prop) if key not in kept}
        prop["anyOf"] = [moved, {"type": "null"}]


class Body(BaseModel):
    """A request body: values of the wrong type are refused, not converted ("stream": 0).
    A null for an optional field means its default, as ProtoLLM's clients send
    (``"stop_words": null``, ``"priority": null``), and as OpenAI's API takes it."""

    model_config = ConfigDict(strict=True, json_schema_extra=_nullable_optionals)

    @model_validator(mode="before")
    @classmethod
    def _null_is_default(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not any(value is None for value in data.values()):
            return data  # the usual case: nothing to drop
        fields = cls.model_fields
        return {key: value for key, value in data.items()
                if value is not None or key not in fields or fields[key].is_required()}  # fmt: skip


def new_job_id() -> str:
    """A job id for a request that brought none."""
    return uuid4().hex


class Meta(Body):
    """How to generate: the spec's ``meta`` object, with its defaults."""

    temperature: float = Field(0.2, ge=0, le=2, description="degree of randomness")
    tokens_limit: Count = Field(8096, description="most tokens to generate")
    stop_words: list[str] = Field(default_factory=list, description="generation stops at any of these")
    model: str | None = Field(
        None, pattern=MODEL_PATTERN, description="model to use; the deployment's default when omitted"
    )
    priority: Annotated[int, Field(ge=0, le=9), BeforeValidator(integral)] = Field(
        DEFAULT_PRIORITY, description="0 (batch) to 9 (most urgent): waiting jobs of a model start in this order"
    )


class Message(Body):
    """One turn of a conversation."""

    role: Role = Field(description='"system", "user", "assistant" or "tool"')
    content: str


TopPriority = Annotated[int | None, Field(ge=0, le=9), BeforeValidator(integral)]
PRIORITY_DOC = "the job's priority, where ProtoLLM's clients put it; meta.priority wins when both are given"
SOURCE_DOC = 'sent by ProtoLLM\'s clients ("local"); accepted, not used'


class GenerateRequest(Body):
    """Body of ``POST /generate``."""

    job_id: str = Field(
        default_factory=new_job_id,
        pattern=JOB_ID_PATTERN,
        description="unique id of the job: up to 128 letters, digits and . _ : -",
    )
    meta: Meta = Field(default_factory=Meta)
    content: str = Field(description="the input text")
    stream: bool = Field(False, description="answer as server-sent events, piece by piece")
    priority: TopPriority = Field(None, description=PRIORITY_DOC)
    source: str | None = Field(None, max_length=256, description=SOURCE_DOC)


class ChatCompletionRequest(Body):
    """Body of ``POST /chat_completion``."""

    job_id: str = Field(
        default_factory=new_job_id,
        pattern=JOB_ID_PATTERN,
        description="unique id of the job: up to 128 letters, digits and . _ : -",
    )
    meta: Meta = Field(default_factory=Meta)
    messages: list[Message] = Field(min_length=1, description="the conversation so far")
    stream: bool = Field(False, description="answer as server-sent events, piece by piece")
    priority: TopPriority = Field(None, description=PRIORITY_DOC)
    source: str | None = Field(None, max_length=256, description=SOURCE_DOC)


class CompletionResponse(BaseModel):
    """Answer of both endpoints."""

    content: str = Field(description="the generated text")
    job_id: str


class JobAccepted(BaseModel):
    """Answer of an asynchronous submission (202): where to collect the result."""

    job_id: str
    tenant: str | None = Field(None, description="the tenant it is run for (API keys' tenants)")
    status: str = Field(description="queued, running, succeeded, failed or cancelled")
    status_url: str


class JobError(BaseModel):
    """Why a job failed, and the status a waiting request got for it."""

    type: str | None
    message: str
    status_code: int


class JobStatus(BaseModel):
    """``GET /jobs/{job_id}``."""

    job_id: str
    tenant: str | None = Field(None, description="the tenant it is run for (API keys' tenants)")
    status: str = Field(description="queued, running, succeeded, failed or cancelled")
    accepted_at: str | None = Field(description="ISO 8601, UTC")
    started_at: str | None
    finished_at: str | None
    queue_position: int | None = Field(description="1 for the next to start; only while queued")
    result: dict[str, Any] | None = Field(description="content, model, finish_reason, usage; once succeeded")
    error: JobError | None
