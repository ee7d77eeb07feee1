"""The body of ``POST /v1/embeddings``, as the ``openai`` SDK, LangChain's
OpenAIEmbeddings and LlamaIndex's OpenAIEmbedding send it."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator
from pydantic_core import PydanticCustomError

from api.native.types import DEFAULT_PRIORITY, MODEL_PATTERN, integral
from api.openai.types import _FallsBack

# The deployment's limits are set on `input` by api/limits.py.
Text = Annotated[str, Field(min_length=1)]
MAX_TOKEN_ID = 2**31 - 1
TokenId = Annotated[int, Field(ge=0, le=MAX_TOKEN_ID), BeforeValidator(integral)]
Tokens = Annotated[list[TokenId], Field(min_length=1)]


class EmbeddingsRequest(_FallsBack):
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

    @field_validator("input", mode="before")
    @classmethod
    def _token_ids(cls, value: Any) -> Any:
        """Token ids are said wrong as token ids (not as "a valid string", the union's first branch)."""
        if not isinstance(value, list) or not value or isinstance(value[0], str):
            return value
        lists = value if isinstance(value[0], list) else [value]
        for n, ids in enumerate(lists):
            where = f"[{n}]" if lists is value else ""
            if not isinstance(ids, list):
                raise PydanticCustomError("token_ids", "a list of token ids, or a list of such lists, not both")
            for i, token in enumerate(ids):
                if isinstance(token, float) and token.is_integer():
                    token = int(token)
                if isinstance(token, bool) or not isinstance(token, int):
                    raise PydanticCustomError(
                        "token_id", "input{where}: a token id is an integer, not {kind}",
                        {"where": f"{where}[{i}]", "kind": type(token).__name__},
                    )  # fmt: skip
                if not 0 <= token <= MAX_TOKEN_ID:
                    raise PydanticCustomError(
                        "token_id", "token id {token} at input{where} is out of range (0 to {most})",
                        {"where": f"{where}[{i}]", "token": token, "most": MAX_TOKEN_ID},
                    )  # fmt: skip
        return value

    def inputs(self) -> list[str] | list[list[int]]:
        """The inputs as a list: texts, or lists of token ids."""
        given = self.input
        if isinstance(given, str):
            return [given]
        if given and isinstance(given[0], int):
            return [given]  # type: ignore[list-item]
        return given  # type: ignore[return-value]
