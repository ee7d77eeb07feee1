"""The body of ``POST /v1/completions``."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field, field_validator
from pydantic_core import PydanticCustomError

from api.native.types import integral
from api.openai.types import _Sampling

COMPLETION_PASSED_ON = frozenset({"prompt", "echo", "suffix", "logprobs", "best_of", "logit_bias", "user"})


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
