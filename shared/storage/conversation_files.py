"""Conversations (/v1/conversations) in the file store: kept until deleted, whatever
Redis keeps. The API writes a conversation and the items a client adds; the worker that
runs a response of the conversation adds that turn's input and output items as its job
ends. Blocking calls (the API runs them off its event loop).

    conversations/{tenant}/{conversation_id}/conversation.json
            the conversation's object (OpenAI's, plus its tenant)
    conversations/{tenant}/{conversation_id}/items/{key}~{item_id}.json
            one item each; `key` orders them: when it was added (nanoseconds), a
            random part of its own, its place among the items added with it
    conversations/{tenant}/{conversation_id}/turns/{response_id}
            the key a response's items were added under (its run again writes
            the same names: a turn is never added twice)

Adding never reads and rewrites a shared object: each item is an object of a name no
other writer makes, so two responses of one conversation finishing at once both add
all their items (none lost, each turn's items together: they share their key's
prefix). The item's id is in its name: a page of a list, or one item, reads only the
objects it returns. A conversation is its tenant's: another tenant's id is a folder
that does not exist.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from typing import Any

from shared.storage.file_store import FileStore

# What the gateway makes (conv_ and 48 hex digits) and what a route takes.
CONVERSATION_ID_PATTERN = r"^conv_[A-Za-z0-9]{1,64}$"
# An item's id, as its object's name holds it (an id of a request's item that is not
# one of these is replaced as its turn is added).
ITEM_ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"
_ITEM_ID = re.compile(ITEM_ID_PATTERN)


def new_conversation_id() -> str:
    return f"conv_{secrets.token_hex(24)}"


def new_item_id(kind: str) -> str:
    """A new id for an item a client adds: ``msg_…``, ``fc_…``, ``fco_…``."""
    prefix = {"message": "msg", "function_call": "fc", "function_call_output": "fco"}.get(kind, "item")
    return f"{prefix}_{secrets.token_hex(24)}"


def conversation_folder(tenant: str, conversation_id: str) -> str:
    return f"conversations/{tenant}/{conversation_id}"


def _object(tenant: str, conversation_id: str) -> str:
    return f"{conversation_folder(tenant, conversation_id)}/conversation.json"


def _items(tenant: str, conversation_id: str) -> str:
    return f"{conversation_folder(tenant, conversation_id)}/items"


def _turn(tenant: str, conversation_id: str, response_id: str) -> str:
    return f"{conversation_folder(tenant, conversation_id)}/turns/{response_id}"


def _new_key() -> str:
    """The key of items added together: after every key made before it (on this host's
    clock), and never another writer's (its random part)."""
    return f"{time.time_ns():020d}-{secrets.token_hex(6)}"


def _name(key: str, n: int, item_id: str) -> str:
    return f"{key}-{n:05d}~{item_id}.json"


def item_id_of(name: str) -> str:
    """The id of the item an object of that name holds."""
    return name.removesuffix(".json").partition("~")[2]


class ConversationFiles:
    """Conversations and their items in the file store (blocking calls)."""

    def __init__(self, store: FileStore) -> None:
        self.store = store

    # -- the conversation -----------------------------------------------------------

    def create(self, tenant: str, conversation: dict[str, Any], items: list[dict[str, Any]]) -> None:
        """Keep a new conversation (`conversation["id"]`) with its first `items` (ids given):
        the items first, so that a conversation found has them all."""
        self._write(tenant, conversation["id"], _new_key(), items)
        self.store.put(_object(tenant, conversation["id"]), json.dumps(conversation).encode())

    def get(self, tenant: str, conversation_id: str) -> dict[str, Any] | None:
        """The conversation's object, or None (none of that id is the tenant's)."""
        raw = self.store.get(_object(tenant, conversation_id))
        return json.loads(raw) if raw is not None else None

    def put(self, tenant: str, conversation: dict[str, Any]) -> None:
        """Write the conversation's object again (its metadata changed)."""
        self.store.put(_object(tenant, conversation["id"]), json.dumps(conversation).encode())

    def delete(self, tenant: str, conversation_id: str) -> None:
        """Remove the conversation and its items."""
        # Its object first: from then on nothing is added to it (`add`, `add_turn`).
        self.store.delete(_object(tenant, conversation_id))
        self.store.delete_folder(conversation_folder(tenant, conversation_id))

    # -- its items ------------------------------------------------------------------

    def names(self, tenant: str, conversation_id: str) -> list[str]:
        """The names of the conversation's items' objects, oldest first."""
        return self.store.names(_items(tenant, conversation_id))

    def read(self, tenant: str, conversation_id: str, names: list[str]) -> list[dict[str, Any]]:
        """The items of those names, in that order (one deleted meanwhile left out)."""
        found = self.store.get_many(_items(tenant, conversation_id), names)
        return [json.loads(found[name]) for name in names if name in found]

    def items(self, tenant: str, conversation_id: str) -> list[dict[str, Any]]:
        """Every item of the conversation, oldest first."""
        return self.read(tenant, conversation_id, self.names(tenant, conversation_id))

    def find(self, tenant: str, conversation_id: str, item_id: str) -> str | None:
        """The name of the item's object, or None."""
        return next((n for n in self.names(tenant, conversation_id) if item_id_of(n) == item_id), None)

    def delete_item(self, tenant: str, conversation_id: str, name: str) -> None:
        self.store.delete(f"{_items(tenant, conversation_id)}/{name}")

    def add(self, tenant: str, conversation_id: str, items: list[dict[str, Any]]) -> bool:
        """Add `items` (ids given) after every item added before; False (nothing kept)
        when the conversation does not exist."""
        if not self.store.exists(_object(tenant, conversation_id)):
            return False
        self._write(tenant, conversation_id, _new_key(), items)
        return self._still_there(tenant, conversation_id)

    def add_turn(self, tenant: str, conversation_id: str, response_id: str, items: list[dict[str, Any]]) -> bool:
        """Add a response's input and output `items` as its job ends, once: a run of
        the same response again (its worker died before its message was acknowledged)
        writes the same objects again. False when the conversation does not exist."""
        if not self.store.exists(_object(tenant, conversation_id)):
            return False
        turn = _turn(tenant, conversation_id, response_id)
        kept = self.store.get(turn)
        key = kept.decode() if kept is not None else _new_key()
        if kept is None:
            self.store.put(turn, key.encode())
        ids = {item["id"] for item in items}
        named = []
        for n, item in enumerate(items):
            if not isinstance(item.get("id"), str) or not _ITEM_ID.match(item["id"]):
                # A request's own id that no object can be named by: one of the turn's own.
                item = {**item, "id": _unused(f"in_{response_id.removeprefix('resp_')}_{n}", ids)}
            named.append(item)
        self._write(tenant, conversation_id, key, named)
        return self._still_there(tenant, conversation_id)

    def _write(self, tenant: str, conversation_id: str, key: str, items: list[dict[str, Any]]) -> None:
        folder = _items(tenant, conversation_id)
        for n, item in enumerate(items):
            self.store.put(f"{folder}/{_name(key, n, item['id'])}", json.dumps(item).encode())

    def _still_there(self, tenant: str, conversation_id: str) -> bool:
        """Whether the conversation is still there after items were added: deleted
        meanwhile, what was added goes with it."""
        if self.store.exists(_object(tenant, conversation_id)):
            return True
        self.store.delete_folder(conversation_folder(tenant, conversation_id))
        return False


def _unused(wanted: str, ids: set[str]) -> str:
    made = re.sub(r"[^A-Za-z0-9_-]", "-", wanted)[:120]
    while made in ids:
        made += "_"
    ids.add(made)
    return made
