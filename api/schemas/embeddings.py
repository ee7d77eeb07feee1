"""The body of ``POST /v1/embeddings``, as the ``openai`` SDK, LangChain's
OpenAIEmbeddings and LlamaIndex's OpenAIEmbedding send it."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field

from api.schemas.native import DEFAULT_PRIORITY, MODEL_PATTERN, integral
from api.schemas.openai import _PassesOn

# The deployment's limits are set on `input` by api/schemas/limits.py.
Text = Annotated[str, Field(min_length=1)]
TokenId = Annotated[int, Field(ge=0, le=2**31 - 1), BeforeValidator(integral)]
Tokens = Annotated[list[TokenId], Field(min_length=1)]


class EmbeddingsRequest(_PassesOn):
    """Body of ``POST /v1/embeddings``. Fields beyond OpenAI's go to the model server
    as given (vLLM's ``truncate_prompt_tokens``, ...)."""

    model: str | None = Field(None, pattern=MODEL_PATTERN, description="the model; the deployment's default")
    input: Text | Annotated[list[Text], Field(min_length=1)] | Tokens | Annotated[list[Tokens], Field(min_length=1)] = (
        Field(description="a text, a list of texts, a list of token ids, or a list of lists of token ids")
    )
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="base64: each vector as little-endian float32, base64-encoded"
    )
    dimensions: Annotated[int, Field(ge=1, le=65536), BeforeValidator(integral)] | None = None
    user: str | None = None
    priority: Annotated[int, Field(ge=0, le=9), BeforeValidator(integral)] = Field(
        DEFAULT_PRIORITY, description="not OpenAI's: 0 (batch) to 9 (most urgent), as meta.priority"
    )

    def inputs(self) -> list[str] | list[list[int]]:
        """The inputs as a list: texts, or lists of token ids."""
        given = self.input
        if isinstance(given, str):
            return [given]
        if given and isinstance(given[0], int):
            return [given]  # type: ignore[list-item]
        return given  # type: ignore[return-value]
