"""Batches, as OpenAI's Batch API has them: created from an input file, run line by
line as jobs (api/openai/batches/keeper.py), finished with an output and an error file.

A batch's object is kept in the file store (shared/storage/batch_files.py); only the
process driving it writes it after it is created. Cancelling writes the batch's
stop mark, which that process (and each worker, before it starts a line) reads: the
batch shows ``cancelling`` until it is driven to ``cancelled``.
"""

from __future__ import annotations

import json
import time
from typing import Any

from api.errors import BadRequest, BatchConflict, BatchNotFound, FileNotFound, TooManyRequests
from api.openai.batches.doorbell import Doorbell
from api.openai.files.store import Files, sortable_id
from shared.storage.batch_files import (
    ACTIVE,
    BatchLines,
    active_marker,
    batch_object,
    indexed_mark,
    owner_entry,
    owner_folder,
)
from shared.tenants import DEFAULT_TENANT, Owner

STATUSES = ("validating", "in_progress", "finalizing", "completed", "failed", "expired", "cancelling", "cancelled")
UNFINISHED = frozenset({"validating", "in_progress", "finalizing"})
UNITS = {"s": 1, "m": 60, "h": 3600}


def window_seconds(window: str) -> int | None:
    """The seconds a completion window gives: OpenAI's "24h", or (beyond OpenAI) any
    "<n>s", "<n>m" or "<n>h"; None when it is not one."""
    number, unit = window[:-1], window[-1:]
    if unit not in UNITS or not number.isdigit():
        return None
    seconds = int(number) * UNITS[unit]
    return seconds if seconds > 0 else None


PUBLIC = (
    "id", "object", "endpoint", "errors", "input_file_id", "completion_window", "status", "output_file_id",
    "error_file_id", "created_at", "in_progress_at", "expires_at", "finalizing_at", "completed_at", "failed_at",
    "expired_at", "cancelling_at", "cancelled_at", "request_counts", "metadata", "model", "usage",
)  # fmt: skip


def public(batch: dict[str, Any]) -> dict[str, Any]:
    """A batch as clients see it (without its owner and what drives it)."""
    return {name: batch.get(name) for name in PUBLIC}


class Batches:
    """The batches resource (one per API process)."""

    def __init__(self, files: Files, doorbell: Doorbell) -> None:
        """`doorbell` is rung when a batch is created or cancelled here: the keeper looks at once."""
        self._files = files
        self._store = files.store
        self.lines = BatchLines(files.store)
        self._doorbell = doorbell
        self._indexed = False  # whether this process saw every earlier batch indexed

    async def create(
        self,
        input_file_id: str,
        endpoint: str,
        window: str,
        metadata: dict[str, str] | None,
        owner: Owner,
        tenant: str = DEFAULT_TENANT,
        most: int | None = None,
        key_id: str = "",
    ) -> dict[str, Any]:
        """A new batch (``validating``): its lines are queued by the keeper, run for
        `tenant` (their usage counted to the key `key_id`, when its key has an id); 429
        when `owner` has `most` batches not finished (quota batches_in_flight)."""
        seconds = window_seconds(window)
        if seconds is None:
            raise BadRequest("completion_window: '24h' (or, beyond OpenAI, a duration such as '90m')")
        if endpoint not in ("/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/embeddings"):
            raise BadRequest(
                "endpoint: batches run /v1/chat/completions, /v1/completions, /v1/responses or /v1/embeddings"
            )
        pairs = (metadata or {}).items()
        if len(pairs) > 16 or any(len(k) > 64 or not isinstance(v, str) or len(v) > 512 for k, v in pairs):
            raise BadRequest("metadata: at most 16 pairs, keys of at most 64 characters, string values of at most 512")
        try:
            source = await self._files.get(input_file_id, owner)
        except FileNotFound:
            raise FileNotFound(f"input_file_id: no file {input_file_id!r}") from None
        if source.get("purpose") != "batch":
            raise BadRequest(f"input_file_id: file {input_file_id!r} is not a batch input file (purpose 'batch')")
        if most is not None and owner.name is not None:
            unfinished = await self._unfinished(owner)
            if unfinished >= most:
                # Each batch driven is read whole into an API process's memory: one file
                # of 200 MB made into many batches would take every process's.
                raise TooManyRequests(
                    f"quota batches_in_flight: tenant {tenant!r} has {unfinished} batches not finished, at most"
                    f" {most}; try again when one has finished",
                    retry_after=60,
                )
        now = int(time.time())
        batch = {
            "id": f"batch_{sortable_id()}", "object": "batch", "endpoint": endpoint, "errors": None,
            "input_file_id": input_file_id, "completion_window": window, "status": "validating",
            "output_file_id": None, "error_file_id": None, "created_at": now, "in_progress_at": None,
            "expires_at": now + seconds, "finalizing_at": None, "completed_at": None, "failed_at": None,
            "expired_at": None, "cancelling_at": None, "cancelled_at": None,
            "request_counts": {"total": int(source.get("lines") or 0), "completed": 0, "failed": 0},
            "metadata": metadata, "model": None, "usage": None, "owner": owner.name, "tenant": tenant,
        }  # fmt: skip
        if key_id:
            batch["key_id"] = key_id
        await self.write(batch)
        if owner.name is not None:  # its entry among its owner's (none without keys)
            await self._files.blocking(self._store.put, owner_entry(owner.name, "batches", batch["id"]), b"")
        await self._files.blocking(self._store.put, active_marker(batch["id"]), b"")
        self._doorbell.ring()
        return batch

    async def _unfinished(self, owner: Owner) -> int:
        """How many of `owner`'s own batches (by its entries) are not finished."""
        if not self._indexed:
            await self._files.blocking(self._index_all)
            self._indexed = True
        count = 0
        for batch_id in await self._files.blocking(self._store.names, owner_folder(str(owner.name), "batches")):
            batch = await self.read(batch_id)
            count += batch is not None and batch["status"] in UNFINISHED
        return count

    def _index_all(self) -> None:
        """Once per store: an entry for each batch kept before batches had entries (by an
        earlier release), then the mark that they have."""
        if self._store.exists(indexed_mark("batches")):
            return
        for batch_id in self._store.names("batches"):
            raw = self._store.get(batch_object(batch_id))
            owner = json.loads(raw).get("owner") if raw is not None else None
            if owner is not None:
                self._store.put(owner_entry(str(owner), "batches", batch_id), b"")
        self._store.put(indexed_mark("batches"), b"")

    async def write(self, batch: dict[str, Any]) -> None:
        await self._files.blocking(self._store.put, batch_object(batch["id"]), json.dumps(batch).encode())

    async def read(self, batch_id: str) -> dict[str, Any] | None:
        """The batch as stored (no stop mark applied), or None."""
        if not batch_id.startswith("batch_") or not batch_id.replace("_", "").isalnum() or len(batch_id) > 100:
            return None
        raw = await self._files.blocking(self._store.get, batch_object(batch_id))
        return json.loads(raw) if raw is not None else None

    async def get(self, batch_id: str, owner: Owner) -> dict[str, Any]:
        """The batch as it is now; 404 when there is none, or it is another tenant's."""
        batch = await self.read(batch_id)
        if batch is None or not owner.sees(batch.get("owner")):
            raise BatchNotFound(f"no batch {batch_id!r}")
        if batch["status"] in UNFINISHED:
            mark = await self._files.blocking(self.lines.stop_mark, batch_id)
            if mark is not None and mark.get("why") == "cancelled":
                batch = {**batch, "status": "cancelling", "cancelling_at": mark.get("at")}
        return batch

    async def page(self, owner: Owner, after: str | None, limit: int) -> tuple[list[dict[str, Any]], bool]:
        """The key's batches (every batch, without keys), newest first: the `limit` after
        the batch `after`, and whether more follow. Batch ids sort in the order they were
        made, so only the batches of the page are read: a tenant's, by its entries among
        its owner's (shared/storage/batch_files.py), not every tenant's newer ones."""
        if owner.every:
            names = await self._files.blocking(self._store.names, "batches")
        else:
            if not self._indexed:
                await self._files.blocking(self._index_all)
                self._indexed = True
            names = []
            for name in (owner.name, *sorted(owner.also)):
                if name is not None:
                    names += await self._files.blocking(self._store.names, owner_folder(name, "batches"))
        names = sorted(set(names), reverse=True)
        if after is not None:
            names = [name for name in names if name < after]
        found: list[dict[str, Any]] = []
        for batch_id in names:
            batch = await self.read(batch_id)
            if batch is None or not owner.sees(batch.get("owner")):
                continue
            found.append(await self.get(batch_id, owner) if batch["status"] in UNFINISHED else batch)
            if len(found) > limit:
                break
        return found[:limit], len(found) > limit

    async def cancel(self, batch_id: str, owner: Owner) -> dict[str, Any]:
        """Stop the batch: lines not started never start, running ones are stopped; 409
        when it has finished already."""
        batch = await self.get(batch_id, owner)
        if batch["status"] == "cancelling":
            return batch
        if batch["status"] not in UNFINISHED:
            raise BatchConflict(f"batch {batch_id!r} has already finished: {batch['status']}")
        await self._files.blocking(self.lines.stop, batch_id, "cancelled", int(time.time()))
        self._doorbell.ring()
        return await self.get(batch_id, owner)

    async def active(self) -> list[str]:
        """The batches not finished yet."""
        return await self._files.blocking(self._store.names, ACTIVE)
