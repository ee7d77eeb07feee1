"""OpenAI's Conversations API: ``/v1/conversations`` (create, retrieve, update, delete)
and ``/v1/conversations/{id}/items`` (list, create, retrieve, delete), as the ``openai``
SDK's ``client.conversations`` calls them; the work is
api/openai/conversations/serving.py's. See docs/responses.md.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query

from api.deps import TenantDep, Whose
from api.openai.conversations.serving import Conversations, not_found
from api.openai.conversations.types import (
    CONVERSATION_ID_PATTERN,
    ITEM_ID_PATTERN,
    ConversationCreate,
    ConversationUpdate,
    ItemsCreate,
)
from api.openai.http import OpenAIRoute
from api.openai.types import ErrorBody
from shared.tenants import Tenant

ConversationId = Annotated[str, Path(pattern=CONVERSATION_ID_PATTERN)]
ItemId = Annotated[str, Path(pattern=ITEM_ID_PATTERN)]
# Extra fields of the items (web search sources, logprobs, ...): none of the items kept
# here has any, so each is accepted and changes nothing. The SDK sends ``include[]``.
Includable = Annotated[str, Query(max_length=100)]
Include = Annotated[list[Includable] | None, Query(alias="include[]", max_length=20)]
IncludePlain = Annotated[list[Includable] | None, Query(alias="include", max_length=20)]


def _whose(tenant: Tenant, whose: str | None, conversation_id: str) -> str:
    """The tenant whose conversation it is: the key's, or the one an admin key names
    (another key naming another tenant finds nothing, as for an unknown id)."""
    if whose is None or whose == tenant.name:
        return tenant.name
    if not tenant.admin:
        raise not_found(conversation_id)
    return whose


def conversations_router(conversations: Conversations, route_class: type[OpenAIRoute]) -> APIRouter:
    """The Conversations API over the conversations in the file store."""
    router = APIRouter(
        prefix="/v1/conversations", route_class=route_class, tags=["conversations"],
        responses={400: {"model": ErrorBody}},
    )  # fmt: skip

    @router.post("")
    async def create_conversation(body: ConversationCreate, tenant: TenantDep) -> dict[str, Any]:
        """A conversation, with its first items (20 at most) and metadata; kept until deleted."""
        return await conversations.create(tenant.name, body)

    @router.get("/{conversation_id}", responses={404: {}})
    async def retrieve_conversation(
        conversation_id: ConversationId, tenant: TenantDep, whose: Whose = None
    ) -> dict[str, Any]:
        return await conversations.retrieve(_whose(tenant, whose, conversation_id), conversation_id)

    @router.post("/{conversation_id}", responses={404: {}})
    async def update_conversation(
        conversation_id: ConversationId, body: ConversationUpdate, tenant: TenantDep, whose: Whose = None
    ) -> dict[str, Any]:
        """Its metadata, replaced."""
        return await conversations.update(_whose(tenant, whose, conversation_id), conversation_id, body.metadata)

    @router.delete("/{conversation_id}", responses={404: {}})
    async def delete_conversation(
        conversation_id: ConversationId, tenant: TenantDep, whose: Whose = None
    ) -> dict[str, Any]:
        """The conversation and its items, deleted."""
        return await conversations.delete(_whose(tenant, whose, conversation_id), conversation_id)

    @router.get("/{conversation_id}/items", responses={404: {}})
    async def list_items(
        conversation_id: ConversationId,
        tenant: TenantDep,
        after: Annotated[str | None, Query(max_length=256)] = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        order: Literal["asc", "desc"] = "desc",
        include: Include = None,
        include_plain: IncludePlain = None,
        whose: Whose = None,
    ) -> dict[str, Any]:
        """Its items, newest first (``order=asc``: oldest first), ``limit`` after the item ``after``."""
        owner = _whose(tenant, whose, conversation_id)
        return await conversations.list_items(owner, conversation_id, after, limit, order)

    @router.post("/{conversation_id}/items", responses={404: {}})
    async def create_items(
        conversation_id: ConversationId,
        body: ItemsCreate,
        tenant: TenantDep,
        include: Include = None,
        include_plain: IncludePlain = None,
        whose: Whose = None,
    ) -> dict[str, Any]:
        """Items (20 at most) added after every item it holds: the items added, with their ids."""
        return await conversations.add_items(_whose(tenant, whose, conversation_id), conversation_id, body)

    @router.get("/{conversation_id}/items/{item_id}", responses={404: {}})
    async def retrieve_item(
        conversation_id: ConversationId,
        item_id: ItemId,
        tenant: TenantDep,
        include: Include = None,
        include_plain: IncludePlain = None,
        whose: Whose = None,
    ) -> dict[str, Any]:
        return await conversations.item(_whose(tenant, whose, conversation_id), conversation_id, item_id)

    @router.delete("/{conversation_id}/items/{item_id}", responses={404: {}})
    async def delete_item(
        conversation_id: ConversationId, item_id: ItemId, tenant: TenantDep, whose: Whose = None
    ) -> dict[str, Any]:
        """The item, deleted: the conversation."""
        return await conversations.delete_item(_whose(tenant, whose, conversation_id), conversation_id, item_id)

    return router
