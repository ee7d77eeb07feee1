"""A response's record (api/openai/responses/store.py): kept once (a retry finds the
first), read back, forgotten with its job's traces; in a fake Redis."""

from __future__ import annotations

import asyncio

import pytest

from api.errors import ResultStoreUnavailable
from api.openai.responses.store import ResponseStore
from tests.unit.api.edge import FakeRedis, config

pytestmark = pytest.mark.unit


def test_a_record_is_kept_once_read_back_and_forgotten_with_what_its_job_left() -> None:
    async def main() -> None:
        settings, redis = config(), FakeRedis()
        records = ResponseStore(settings, redis)  # type: ignore[arg-type]
        first = {"id": "resp_1", "history": [], "input_items": [{"id": "in_1_0"}]}
        assert await records.save("resp_1", first) == first
        assert await records.save("resp_1", {"id": "resp_1", "history": [], "input_items": []}) == first
        assert await records.load("resp_1") == first
        keys = settings.keys
        await redis.set(keys.result("resp_1"), "{}")
        await redis.hset(keys.job("resp_1"), "fingerprint", "f")
        redis.zsets[keys.queued] = {b"resp_1": 1.0, b"other": 2.0}
        await records.forget("resp_1")
        assert await records.load("resp_1") is None
        assert keys.result("resp_1") not in redis.strings and keys.job("resp_1") not in redis.hashes
        assert redis.zsets[keys.queued] == {b"other": 2.0}
        assert records.ttl > 0

    asyncio.run(main())


def test_a_record_that_cannot_be_read_or_kept_is_a_503() -> None:
    redis = FakeRedis()
    redis.down = True
    records = ResponseStore(config(), redis)  # type: ignore[arg-type]
    for call in (records.save("r", {}), records.load("r"), records.forget("r")):
        with pytest.raises(ResultStoreUnavailable):
            asyncio.run(call)
