"""What OpenAI's request bodies share (fields passed on to the model server, fallbacks,
sampling) and OpenAI's error body."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from api.native.types import DEFAULT_PRIORITY, MODEL_PATTERN, Body, Count, JsonInt, integral

# Fields of a request the gateway does not know (a model server's own: vLLM's top_k,
# min_p, guided_json, chat_template_kwargs, ...) are passed on as given, up to this many
# (the body as a whole is bounded by MAX_BODY_BYTES).
MAX_EXTRA_FIELDS = 64


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

    def with_fallbacks(self, job: dict[str, Any]) -> dict[str, Any]:
        """`job`, naming the fallback models the request asks for (when it names any)."""
        fallbacks = self.fallbacks_asked()
        return job if fallbacks is None else {**job, "fallbacks": fallbacks}


class _Sampling(_FallsBack):
    model: str | None = Field(
        None, pattern=MODEL_PATTERN, description="the model; the deployment's default when omitted"
    )
    temperature: float | None = Field(None, ge=0, le=2, description="the model server's own default when omitted")
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
            **sampling_temperature(self.temperature),
            "tokens_limit": max_tokens,
            "stop_words": stop,
            "model": self.model,
            "priority": self.priority,
            "sampling": {k: v for k, v in sampling.items() if v is not None},
        }


def sampling_temperature(temperature: float | None) -> dict[str, Any]:
    """A job's ``meta`` temperature: as the request set it, or unset (the model server's
    own default applies; OpenAI's 1.0 is still given for a worker of the previous release)."""
    return {"temperature": 1.0, "temperature_unset": True} if temperature is None else {"temperature": temperature}


class OpenAIError(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | int | None = None


class ErrorBody(BaseModel):
    error: OpenAIError
