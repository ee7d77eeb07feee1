"""Files, as OpenAI's Files API keeps them: batches' input files (uploaded, checked
line by line) and their output and error files (written when a batch finishes).

Each file belongs to the API key that uploaded it (to its batch's key, for output):
with keys configured, a key sees only its own files. Objects live in the file store
(shared/storage/file_store.py); every call here runs off the event loop.

A tenant's list reads its own files' objects only, by its entries in the store's
owners' index (`owner_folder`): a list that read every file to keep its own would cost
each tenant what the tenant with most files keeps. Files kept before that index get
their entries once, the first time a process lists (`indexed_mark`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import IO, Any, TypeVar

from api.errors import BadRequest, FileNotFound, FileStoreUnavailable, FileTooLarge, TooManyRequests
from api.limits import RequestModels
from api.openai.batches.input import read_input
from shared.config import Config
from shared.model_access import permitted
from shared.registry import Registry
from shared.storage.batch_files import file_data, file_object, indexed_mark, owner_entry, owner_folder
from shared.storage.file_store import FileStore
from shared.tenants import Owner, Tenant

T = TypeVar("T")
PUBLIC = ("id", "object", "bytes", "created_at", "filename", "purpose", "status", "expires_at", "status_details")

log = logging.getLogger(__name__)


def public(found: dict[str, Any]) -> dict[str, Any]:
    """An object as clients see it (without its owner)."""
    return {name: found.get(name) for name in PUBLIC}


class Files:
    """The files resource (one per API process)."""

    def __init__(self, config: Config, store: FileStore, registry: Registry, models: RequestModels) -> None:
        self._config = config
        self.store = store
        self._registry = registry
        self._models = models
        self._indexed = False  # whether this process saw every earlier file indexed

    async def blocking(self, call: Callable[..., T], *args: Any) -> T:
        """`call(*args)` on a thread; 503 naming the file store when it fails."""
        try:
            return await asyncio.get_running_loop().run_in_executor(None, call, *args)
        except (OSError, ValueError) as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            # Where it lives (a path, a bucket) and the reason go to the log, not to the answer.
            log.warning("file store %s unavailable: %s: %s", self._config.file_store_url, type(exc).__name__, exc)
            raise FileStoreUnavailable(f"file store unavailable ({type(exc).__name__})") from None

    async def create(
        self, upload: IO[bytes], filename: str, purpose: str, owner: Owner, tenant: Tenant | None = None
    ) -> dict[str, Any]:
        """Keep an uploaded batch input file, checked line by line first (400 naming each
        bad line), within `tenant`'s quota file_bytes (429)."""
        if purpose != "batch":
            raise BadRequest("purpose: files uploaded here are batches' input files: purpose must be 'batch'")
        size = await self.blocking(_size, upload)
        if size > self._config.batch_max_file_bytes:
            limit = self._config.batch_max_file_bytes
            raise FileTooLarge(f"file of {size} bytes; at most {limit} (BATCH_MAX_FILE_BYTES)")
        quota = tenant.quotas.file_bytes if tenant is not None else None
        if tenant is not None and quota is not None and owner.name is not None:
            kept = await self._owned_by(owner)
            used = sum(int(f.get("bytes") or 0) for f in kept if f.get("purpose") == "batch")
            if used + size > quota:
                raise TooManyRequests(
                    f"quota file_bytes: tenant {tenant.name!r} keeps {used} bytes of files, at most {quota};"
                    f" delete some (DELETE /v1/files/{{file_id}}) to upload this one of {size} bytes"
                )
        # Its lines may name only models its tenant may use (another is an unknown model).
        registry = permitted(self._registry, tenant.models if tenant is not None else None)
        read = await self.blocking(read_input, _lines(upload), self._config, registry, self._models)
        if read.problems or read.too_many:
            raise BadRequest(read.refusal(self._config.batch_max_lines))
        file_id = f"file-{sortable_id()}"
        found = {
            "id": file_id, "object": "file", "bytes": size, "created_at": int(time.time()),
            "filename": filename or "input.jsonl", "purpose": purpose, "status": "processed",
            "expires_at": None, "status_details": None, "owner": owner.name, "lines": len(read.lines),
        }  # fmt: skip
        upload.seek(0)
        await self.blocking(self.store.put_stream, file_data(file_id), upload)
        await self.blocking(self.store.put, file_object(file_id), json.dumps(found).encode())
        await self._enter(found)
        return found

    async def write(self, file_id: str, filename: str, content: bytes, owner: str | None) -> dict[str, Any]:
        """Keep a batch's output or error file (`file_id` chosen by the batch: written again, it is the same file)."""
        found = {
            "id": file_id, "object": "file", "bytes": len(content), "created_at": int(time.time()),
            "filename": filename, "purpose": "batch_output", "status": "processed",
            "expires_at": None, "status_details": None, "owner": owner,
        }  # fmt: skip
        await self.blocking(self.store.put, file_data(file_id), content)
        await self.blocking(self.store.put, file_object(file_id), json.dumps(found).encode())
        await self._enter(found)
        return found

    async def _enter(self, found: dict[str, Any]) -> None:
        """The file's entry among its owner's (none without keys: everything is everyone's)."""
        if found.get("owner") is not None:
            await self.blocking(self.store.put, owner_entry(str(found["owner"]), "files", found["id"]), b"")

    async def get(self, file_id: str, owner: Owner) -> dict[str, Any]:
        """The file's object; 404 when there is none, or it is another key's."""
        raw = await self.blocking(self.store.get, file_object(file_id)) if _valid_id(file_id) else None
        found = json.loads(raw) if raw is not None else None
        if found is None or not _visible(found, owner):
            raise FileNotFound(f"no file {file_id!r}")
        return found

    async def content(self, file_id: str, owner: Owner) -> Iterator[bytes]:
        """The file's content, piece by piece."""
        await self.get(file_id, owner)
        try:
            opened = await self.blocking(self.store.open, file_data(file_id))
        except FileNotFoundError:
            raise FileNotFound(f"no file {file_id!r}") from None
        return _chunks(opened)

    async def list(self, owner: Owner, purpose: str | None) -> list[dict[str, Any]]:
        """The key's files (every file, without keys or for an admin key), newest first."""
        if owner.every:
            found = await self.blocking(self._all)
        else:
            found = await self._owned_by(owner)
        mine = [f for f in found if _visible(f, owner) and (purpose is None or f.get("purpose") == purpose)]
        return sorted(mine, key=lambda f: (f.get("created_at", 0), f["id"]), reverse=True)

    async def _owned_by(self, owner: Owner) -> list[dict[str, Any]]:
        """The objects of the files `owner` keeps (its tenant's, and its keys' from before tenants)."""
        if not self._indexed:
            await self.blocking(self._index_all)
            self._indexed = True
        return await self.blocking(self._owned, [owner.name, *sorted(owner.also)])

    def _owned(self, owners: list[str | None]) -> list[dict[str, Any]]:
        """The objects of the files of `owners`, by their entries."""
        found = []
        for name in owners:
            if name is None:
                continue
            for file_id in self.store.names(owner_folder(name, "files")):
                raw = self.store.get(file_object(file_id)) if _valid_id(file_id) else None
                if raw is not None:
                    found.append(json.loads(raw))
        return found

    def _index_all(self) -> None:
        """Once per store: an entry for each file kept before files had entries (by an
        earlier release), then the mark that they have. Written again by two processes
        at once, each entry is the same."""
        if self.store.exists(indexed_mark("files")):
            return
        for found in self._all():
            if found.get("owner") is not None:
                self.store.put(owner_entry(str(found["owner"]), "files", found["id"]), b"")
        self.store.put(indexed_mark("files"), b"")

    def _all(self) -> list[dict[str, Any]]:
        found = []
        for name in self.store.names("files"):
            if name.endswith(".json"):
                raw = self.store.get(f"files/{name}")
                if raw is not None:
                    found.append(json.loads(raw))
        return found

    async def delete(self, file_id: str, owner: Owner) -> dict[str, Any]:
        """Remove the file: OpenAI's deletion object."""
        found = await self.get(file_id, owner)
        if found.get("owner") is not None:
            await self.blocking(self.store.delete, owner_entry(str(found["owner"]), "files", file_id))
        await self.blocking(self.store.delete, file_data(file_id))
        await self.blocking(self.store.delete, file_object(file_id))
        return {"id": file_id, "object": "file", "deleted": True}


def sortable_id() -> str:
    """A new id, in the order of creation (the time in ns, then randomness): newest
    first is the ids' order, within a second too."""
    return f"{time.time_ns():016x}{uuid.uuid4().hex[:16]}"


def _valid_id(file_id: str) -> bool:
    return file_id.startswith("file-") and all(c.isalnum() or c in "-_" for c in file_id) and len(file_id) < 100


def _visible(found: dict[str, Any], owner: Owner) -> bool:
    return owner.sees(found.get("owner"))


def _size(upload: IO[bytes]) -> int:
    upload.seek(0, 2)
    size = upload.tell()
    upload.seek(0)
    return size


def _lines(upload: IO[bytes]) -> Iterator[bytes]:
    upload.seek(0)
    yield from upload


def _chunks(opened: IO[bytes]) -> Iterator[bytes]:
    with opened:
        while chunk := opened.read(1 << 16):
            yield chunk
