"""A response's record (api/openai/responses/store.py): kept once (a retry finds the
first), read back, forgotten with its job's traces; in a fake Redis, and a stored
response's copy in the file store (a tmp_path directory) read when Redis has it no more."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from api.errors import FileStoreUnavailable, ResultStoreUnavailable
from api.openai.responses.store import ResponseStore
from shared.config import Config
from shared.storage.file_store import FileStore
from shared.storage.response_files import KeptResponses
from tests.unit.api.edge import FakeRedis, config

pytestmark = pytest.mark.unit

KEY = "alpha~resp_1"


def record(created_at: float | None = None, store: bool = True, **fields: Any) -> dict[str, Any]:
    return {"id": "resp_1", "tenant": "alpha", "created_at": int(time.time() if created_at is None else created_at),
            "model": "m", "request": {"store": store}, "history": [], "input_items": [{"id": "in_1_0"}],
            **fields}  # fmt: skip


def records_on(tmp_path: Path, settings: Config | None = None) -> tuple[ResponseStore, FakeRedis, KeptResponses]:
    settings = settings or config(response_ttl=600)
    redis = FakeRedis()
    kept = KeptResponses(FileStore(str(tmp_path)), 600)
    return ResponseStore(settings, redis, kept), redis, kept  # type: ignore[arg-type]


def test_a_record_is_kept_once_read_back_and_forgotten_with_what_its_job_left(tmp_path: Path) -> None:
    async def main() -> None:
        records, redis, kept = records_on(tmp_path)
        first = record()
        assert await records.save(KEY, first) == first
        # A client's retry of the same request: the first record stays, in Redis and in the file store.
        assert await records.save(KEY, record(input_items=[])) == first
        assert await records.load(KEY) == first
        assert kept.record("alpha", "resp_1") == first
        keys = config().keys
        await redis.set(keys.result(KEY), "{}")
        await redis.hset(keys.job(KEY), "fingerprint", "f")
        redis.xadd_now(keys.stream(KEY), {"i": 0})
        redis.zsets[keys.queued] = {KEY.encode(): 1.0, b"other": 2.0}
        await records.forget(KEY)
        assert await records.load(KEY) is None
        assert keys.result(KEY) not in redis.strings and keys.job(KEY) not in redis.hashes
        assert keys.stream(KEY) not in redis.streams and keys.response(KEY) not in redis.strings
        assert redis.zsets[keys.queued] == {b"other": 2.0}
        assert kept.record("alpha", "resp_1") is None and await records.ended(KEY) is None

    asyncio.run(main())


def test_a_stored_response_is_read_from_the_file_store_once_redis_lost_it(tmp_path: Path) -> None:
    async def main() -> None:
        records, redis, kept = records_on(tmp_path)
        first = record()
        await records.save(KEY, first)
        redis.strings.clear()  # Redis came back empty
        assert await records.load(KEY) == first
        # Its job still on the broker (no outcome yet): queued, as the file store tells it.
        assert await records.ended(KEY) == {"status": "queued", "result": None, "error": None, "finished_at": None}
        kept.save_outcome("alpha", "resp_1", {"status": "succeeded", "result": {"content": "hi"}, "finished_at": "t"})
        ended = await records.ended(KEY)
        assert ended == {"status": "succeeded", "result": {"content": "hi"}, "error": None, "finished_at": "t",
                         "kept": True}  # fmt: skip

    asyncio.run(main())


def test_a_response_not_stored_goes_to_redis_alone(tmp_path: Path) -> None:
    async def main() -> None:
        records, redis, kept = records_on(tmp_path)
        await records.save(KEY, record(store=False))
        assert kept.record("alpha", "resp_1") is None
        assert (await records.load(KEY))["request"] == {"store": False}
        redis.strings.clear()
        assert await records.load(KEY) is None and await records.ended(KEY) is None

    asyncio.run(main())


def test_a_record_past_response_ttl_is_not_answered_wherever_it_is(tmp_path: Path) -> None:
    async def main() -> None:
        records, redis, _ = records_on(tmp_path)
        old = record(created_at=time.time() - 601)
        await records.save(KEY, old)
        # Redis keeps it (its key's own TTL not yet run out): counted from its creation all the same.
        assert redis.strings[config().keys.response(KEY)]
        assert await records.load(KEY) is None
        redis.strings.clear()
        assert await records.load(KEY) is None
        assert not (tmp_path / "responses" / "alpha" / "resp_1").exists()  # removed as it was read

    asyncio.run(main())


def test_a_cancellation_the_api_made_is_kept_as_the_responses_end(tmp_path: Path) -> None:
    async def main() -> None:
        records, _, kept = records_on(tmp_path)
        await records.save(KEY, record())
        await records.keep_end(KEY, {"status": "running", "result": None})
        assert kept.outcome("alpha", "resp_1") is None  # not an end
        cancelled = {"status": "cancelled", "result": None, "error": None, "finished_at": "t", "fingerprint": "f"}
        await records.keep_end(KEY, cancelled)
        assert kept.outcome("alpha", "resp_1") == {"status": "cancelled", "result": None, "error": None,
                                                   "finished_at": "t"}  # fmt: skip

    asyncio.run(main())


def test_the_record_ttl_is_result_ttls_when_response_ttl_is_0(tmp_path: Path) -> None:
    assert records_on(tmp_path, config(response_ttl=0, result_ttl=77))[0].ttl == 77
    assert records_on(tmp_path, config(response_ttl=5, result_ttl=77))[0].ttl == 5


def test_a_record_that_cannot_be_read_or_kept_is_a_503(tmp_path: Path) -> None:
    records, redis, _ = records_on(tmp_path)
    redis.down = True
    for call in (records.save(KEY, record()), records.load(KEY), records.forget(KEY)):
        with pytest.raises(ResultStoreUnavailable):
            asyncio.run(call)


def test_a_file_store_that_fails_as_the_record_is_kept_is_a_503_naming_it(tmp_path: Path) -> None:
    records, redis, _ = records_on(tmp_path)
    (tmp_path / "responses").write_text("not a folder")  # every write under it fails
    with pytest.raises(FileStoreUnavailable, match="file store unavailable"):
        asyncio.run(records.save(KEY, record()))
    # Redis kept it (the job is queued already): the record is there to answer from.
    assert json.loads(redis.strings[config().keys.response(KEY)])["id"] == "resp_1"
