"""A tenant's list of batches reads its own batches only (api/openai/batches/store.py)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from api.openai.batches.store import Batches
from api.openai.files.store import Files
from shared.config import Config
from shared.storage.batch_files import batch_object, file_object
from shared.tenants import EVERYONE, Owner
from tests.unit.api.openai.files.test_store import CountingStore

pytestmark = pytest.mark.unit

ALPHA, BETA = Owner("tenant:alpha"), Owner("tenant:beta")


class Bell:
    def ring(self) -> None:
        pass


def batches_of(tmp_path: Path) -> tuple[Batches, CountingStore]:
    store = CountingStore(str(tmp_path / "store"))
    config = Config(_env_file=None, file_store_url=str(tmp_path / "store"))  # type: ignore[call-arg]
    files = Files(config, store, None, None)  # type: ignore[arg-type]
    for owner in (ALPHA, BETA):
        found = {"id": f"file-{owner.name[7:]}", "object": "file", "purpose": "batch", "lines": 1, "owner": owner.name}
        store.put(file_object(found["id"]), json.dumps(found).encode())
    return Batches(files, Bell()), store  # type: ignore[arg-type]


def test_a_tenants_list_of_batches_reads_its_own_not_another_tenants_newer_ones(tmp_path: Path) -> None:
    async def main() -> None:
        batches, store = batches_of(tmp_path)
        mine = await batches.create("file-alpha", "/v1/chat/completions", "24h", None, ALPHA, "alpha")
        theirs = [
            await batches.create("file-beta", "/v1/chat/completions", "24h", None, BETA, "beta") for _ in range(30)
        ]
        await batches.page(ALPHA, None, 20)  # the first list of a store indexes what it holds, once
        store.read.clear()
        found, more = await batches.page(ALPHA, None, 20)
        assert [b["id"] for b in found] == [mine["id"]] and not more
        assert {path for path in store.read if path.endswith("batch.json")} == {batch_object(mine["id"])}
        found, more = await batches.page(BETA, None, 20)
        assert len(found) == 20 and more and found[0]["id"] == theirs[-1]["id"]
        found, _ = await batches.page(EVERYONE, None, 100)  # an admin key's: every tenant's
        assert len(found) == 31

    asyncio.run(main())


def test_batches_kept_before_the_index_are_listed_for_their_owner(tmp_path: Path) -> None:
    async def main() -> None:
        batches, store = batches_of(tmp_path)
        # As an earlier release kept it: a batch object without an entry among its owner's.
        old = {"id": "batch_0001", "object": "batch", "status": "completed", "owner": "key:0123456789abcdef"}
        store.put(batch_object(old["id"]), json.dumps(old).encode())
        legacy = Owner("tenant:alpha", frozenset({"key:0123456789abcdef"}))
        found, _ = await batches.page(legacy, None, 20)
        assert [b["id"] for b in found] == ["batch_0001"]
        assert (await batches.page(BETA, None, 20))[0] == []

    asyncio.run(main())
