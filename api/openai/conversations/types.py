"""The bodies of ``/v1/conversations``, as OpenAI's clients send them."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from api.openai.responses.types import InputItem
from shared.storage.conversation_files import CONVERSATION_ID_PATTERN, ITEM_ID_PATTERN

__all__ = ["CONVERSATION_ID_PATTERN", "ITEM_ID_PATTERN", "ConversationCreate", "ConversationUpdate", "ItemsCreate"]

# At most 16 pairs, keys of 64 characters at most, values of 512 (OpenAI's limits).
Metadata = Annotated[
    dict[Annotated[str, StringConstraints(max_length=64)], Annotated[str, StringConstraints(max_length=512)]],
    Field(max_length=16, description="at most 16 pairs: keys of 64 characters at most, values of 512"),
]
# What one request adds (OpenAI's limit).
MAX_ITEMS = 20


class _Body(BaseModel):
    """Strict about types and limits; fields a client adds beyond these are ignored."""

    model_config = ConfigDict(strict=True, extra="ignore")


class ConversationCreate(_Body):
    """Body of ``POST /v1/conversations``."""

    items: Annotated[list[InputItem], Field(max_length=MAX_ITEMS)] | None = Field(
        None, description="its first items (20 at most): messages, function calls and their outputs"
    )
    metadata: Metadata | None = None


class ConversationUpdate(_Body):
    """Body of ``POST /v1/conversations/{id}``: its metadata, replaced (null: none)."""

    metadata: Metadata | None


class ItemsCreate(_Body):
    """Body of ``POST /v1/conversations/{id}/items``."""

    items: Annotated[list[InputItem], Field(min_length=1, max_length=MAX_ITEMS)]
