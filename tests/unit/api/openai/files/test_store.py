"""A tenant's list of files reads its own files only (api/openai/files/store.py)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from api.openai.files.store import Files
from shared.config import Config
from shared.storage.batch_files import file_object
from shared.storage.file_store import FileStore
from shared.tenants import EVERYONE, Owner

pytestmark = pytest.mark.unit

ALPHA, BETA = Owner("tenant:alpha"), Owner("tenant:beta")


class CountingStore(FileStore):
    """The local file store, counting the objects read."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.read: list[str] = []

    def get(self, path: str) -> bytes | None:
        self.read.append(path)
        return super().get(path)


def files_of(tmp_path: Path) -> tuple[Files, CountingStore]:
    store = CountingStore(str(tmp_path / "store"))
    config = Config(_env_file=None, file_store_url=str(tmp_path / "store"))  # type: ignore[call-arg]
    return Files(config, store, None, None), store  # type: ignore[arg-type]


def ids(found: list[dict[str, Any]]) -> list[str]:
    return [f["id"] for f in found]


def test_a_tenants_list_reads_its_own_files_not_every_tenants(tmp_path: Path) -> None:
    async def main(tmp_path: Path) -> None:
        files, store = files_of(tmp_path)
        await files.write("file-alpha-1", "a.jsonl", b"{}\n", ALPHA.name)
        for n in range(50):
            await files.write(f"file-beta-{n}", "b.jsonl", b"{}\n", BETA.name)
        await files.list(ALPHA, None)  # the first list of a store indexes what it holds, once
        store.read.clear()
        assert ids(await files.list(ALPHA, None)) == ["file-alpha-1"]
        assert store.read == [file_object("file-alpha-1")]
        assert len(await files.list(BETA, None)) == 50
        assert len(await files.list(EVERYONE, None)) == 51  # an admin key's: every tenant's
        await files.delete("file-alpha-1", ALPHA)
        assert await files.list(ALPHA, None) == []

    asyncio.run(main(tmp_path))


def test_files_kept_before_the_index_are_listed_for_their_owner(tmp_path: Path) -> None:
    async def main(tmp_path: Path) -> None:
        files, store = files_of(tmp_path)
        # As an earlier release kept them: objects without entries among their owner's.
        for file_id, owner in (("file-old-a", "tenant:alpha"), ("file-old-k", "key:0123456789abcdef")):
            found = {"id": file_id, "object": "file", "bytes": 3, "created_at": 1, "owner": owner}
            store.put(file_object(file_id), json.dumps(found).encode())
        await files.write("file-new-b", "b.jsonl", b"{}\n", BETA.name)
        legacy = Owner("tenant:alpha", frozenset({"key:0123456789abcdef"}))
        assert sorted(ids(await files.list(legacy, None))) == ["file-old-a", "file-old-k"]
        assert ids(await files.list(BETA, None)) == ["file-new-b"]
        # Indexed once for the store: another process reads entries only.
        again, store = files_of(tmp_path)
        assert sorted(ids(await again.list(legacy, None))) == ["file-old-a", "file-old-k"]
        assert sorted(store.read) == [file_object("file-old-a"), file_object("file-old-k")]

    asyncio.run(main(tmp_path))
