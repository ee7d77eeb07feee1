"""The Conversations API's work: a conversation and its items, kept in the file store
until deleted (shared/storage/conversation_files.py), each its tenant's; and a
conversation's items as the context of a response that names it (/v1/responses'
``conversation``), whose turn its worker adds as it ends (tasks/response_outcomes.py).
See docs/responses.md.
"""

from __future__ import annotations

import time
from typing import Any

from api.errors import ConversationNotFound
from api.openai.conversations.types import ConversationCreate, ItemsCreate
from api.openai.file_calls import in_file_store
from api.openai.responses.sealing import CompactionSeal
from api.openai.responses.translate import input_items
from api.openai.responses.types import InputItem
from shared.storage.conversation_files import ConversationFiles, item_id_of, new_conversation_id, new_item_id

PUBLIC = ("id", "object", "created_at", "metadata")


def not_found(conversation_id: str) -> ConversationNotFound:
    return ConversationNotFound(f"no conversation {conversation_id!r}: never made, or deleted")


def public(found: dict[str, Any]) -> dict[str, Any]:
    """A conversation as clients see it (without its tenant)."""
    return {name: found[name] for name in PUBLIC}


def new_items(given: list[InputItem], field: str, seal: CompactionSeal, tenant: str) -> list[dict[str, Any]]:
    """Items a client adds, as the conversation keeps them: each checked as a response's
    input item is (InvalidInput naming `field`), with an id of its own and its status. A
    compaction item must be one this gateway sealed for `tenant`, as in a response's input:
    kept otherwise, it would make every later response of the conversation a refusal."""
    raw = [item.model_dump(by_alias=True) for item in given]
    items = input_items(raw, "resp_", field)
    for n, item in enumerate(items):
        if item["type"] == "compaction":
            seal.open(tenant, item["encrypted_content"], f"{field}[{n}]")
    return [{**item, "id": new_item_id(item["type"]), "status": item.get("status") or "completed"} for item in items]


def page(items: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": items,
        "first_id": items[0]["id"] if items else "",
        "last_id": items[-1]["id"] if items else "",
        "has_more": has_more,
    }


class Conversations:
    """Conversations and their items, of the request's tenant (`tenant`: its name)."""

    def __init__(self, files: ConversationFiles, seal: CompactionSeal) -> None:
        self._files = files
        self._seal = seal

    async def create(self, tenant: str, body: ConversationCreate) -> dict[str, Any]:
        items = new_items(body.items or [], "items", self._seal, tenant)
        conversation = {
            "id": new_conversation_id(),
            "object": "conversation",
            "created_at": int(time.time()),
            "metadata": body.metadata or {},
            "tenant": tenant,
        }
        await in_file_store(self._files.create, tenant, conversation, items)
        return public(conversation)

    async def _found(self, tenant: str, conversation_id: str) -> dict[str, Any]:
        found = await in_file_store(self._files.get, tenant, conversation_id)
        if found is None:
            raise not_found(conversation_id)
        return found

    async def retrieve(self, tenant: str, conversation_id: str) -> dict[str, Any]:
        return public(await self._found(tenant, conversation_id))

    async def update(self, tenant: str, conversation_id: str, metadata: dict[str, str] | None) -> dict[str, Any]:
        """Its metadata replaced (None: none)."""
        found = {**await self._found(tenant, conversation_id), "metadata": metadata or {}}
        await in_file_store(self._files.put, tenant, found)
        return public(found)

    async def delete(self, tenant: str, conversation_id: str) -> dict[str, Any]:
        await self._found(tenant, conversation_id)
        await in_file_store(self._files.delete, tenant, conversation_id)
        return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}

    async def list_items(
        self, tenant: str, conversation_id: str, after: str | None, limit: int, order: str
    ) -> dict[str, Any]:
        """A page of its items: `limit` of them after the item `after` (none when it is not
        there), oldest first with ``order=asc``."""
        await self._found(tenant, conversation_id)
        names = await in_file_store(self._files.names, tenant, conversation_id)
        if order == "desc":
            names.reverse()
        if after is not None:
            ids = [item_id_of(name) for name in names]
            names = names[ids.index(after) + 1 :] if after in ids else []
        chosen = names[:limit]
        items = await in_file_store(self._files.read, tenant, conversation_id, chosen)
        return page(items, len(names) > limit)

    async def add_items(self, tenant: str, conversation_id: str, body: ItemsCreate) -> dict[str, Any]:
        """Add items after every item it holds: the items added."""
        items = new_items(body.items, "items", self._seal, tenant)
        await self._found(tenant, conversation_id)
        if not await in_file_store(self._files.add, tenant, conversation_id, items):
            raise not_found(conversation_id)  # deleted meanwhile
        return page(items, False)

    async def _item_name(self, tenant: str, conversation_id: str, item_id: str) -> str:
        await self._found(tenant, conversation_id)
        name = await in_file_store(self._files.find, tenant, conversation_id, item_id)
        if name is None:
            raise ConversationNotFound(f"no item {item_id!r} in conversation {conversation_id!r}")
        return name

    async def item(self, tenant: str, conversation_id: str, item_id: str) -> dict[str, Any]:
        name = await self._item_name(tenant, conversation_id, item_id)
        found = await in_file_store(self._files.read, tenant, conversation_id, [name])
        if not found:
            raise ConversationNotFound(f"no item {item_id!r} in conversation {conversation_id!r}")
        return found[0]

    async def delete_item(self, tenant: str, conversation_id: str, item_id: str) -> dict[str, Any]:
        """Remove the item: the conversation."""
        name = await self._item_name(tenant, conversation_id, item_id)
        await in_file_store(self._files.delete_item, tenant, conversation_id, name)
        return await self.retrieve(tenant, conversation_id)

    async def context(self, tenant: str, conversation_id: str) -> list[dict[str, Any]]:
        """Every item of the conversation, oldest first: what a response naming it is
        asked after (404 naming ``conversation`` when it is not the tenant's)."""
        found = await in_file_store(self._files.get, tenant, conversation_id)
        if found is None:
            raise ConversationNotFound(f"conversation: no conversation {conversation_id!r}")
        return await in_file_store(self._files.items, tenant, conversation_id)
