"""OpenAI's request and response bodies, for the clients written against OpenAI's API."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field

from api.schemas import DEFAULT_PRIORITY, MODEL_PATTERN, Body, Count, JsonInt, Role, integral


class OpenAIMessage(Body):
    role: Role
    content: str


class _Sampling(Body):
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


class ChatCompletionsRequest(_Sampling):
    """Body of ``POST /v1/chat/completions``."""

    messages: list[OpenAIMessage] = Field(min_length=1)
    max_completion_tokens: Count | None = None


class CompletionsRequest(_Sampling):
    """Body of ``POST /v1/completions`` (one prompt, sent to the model as one user message)."""

    prompt: str


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
