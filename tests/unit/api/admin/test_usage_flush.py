"""Moving finished minutes' usage from Redis (faked at the edge: tests/unit/api/edge.py)
into the control plane's database (a SQLite file): each minute once, whoever flushes and
however often; one process at a time; what Redis loses afterwards is kept."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.admin.usage_flush import GRACE_SECONDS, KEPT_MINUTES, UsageFlush, read_minutes
from shared.config import Config
from shared.contract.keys import usage_bucket_prefix
from shared.control.database import engine_for, migrate
from shared.control.usage import Usage, UsageFilter, UsageHistory, totals
from tests.unit.api.edge import FakeRedis

pytestmark = pytest.mark.unit

MINUTE = 30_000_000  # Unix seconds // 60
CONFIG = Config(_env_file=None, redis_prefix="t")  # type: ignore[call-arg]
KEYS = CONFIG.keys


@pytest.fixture
def history(tmp_path: Path) -> Iterator[UsageHistory]:
    engine = engine_for(f"sqlite:///{tmp_path}/control.db")
    migrate(engine)
    yield UsageHistory(engine)
    engine.dispose()


def count(redis: FakeRedis, minute: int, prefix: str, **counts: int) -> None:
    """What the workers' STORE_ONCE adds to a minute's hash (the Lua itself runs in
    tests/integration/shared/test_contract.py)."""
    stored = redis.hashes.setdefault(KEYS.usage_buckets(minute), {})
    for name, value in counts.items():
        field = f"{prefix}{name}".encode()
        stored[field] = str(int(stored.get(field, b"0")) + value).encode()


def recorded(history: UsageHistory, width: str = "1m") -> list[Usage]:
    return history.read(width, 0, 2**40, UsageFilter(), 2**40)[0]


def test_a_minutes_hash_is_read_as_its_rows() -> None:
    redis = FakeRedis()
    key_a = usage_bucket_prefix("proj_a", "key_1", False, "completions", "org|model")  # a model's name may hold "|"
    count(redis, MINUTE, key_a, requests=2, input=30, cached=10, output=7, cost=900)
    count(redis, MINUTE, usage_bucket_prefix("team", "", True, "embeddings", "e"), requests=1, input=4)
    redis.hashes[KEYS.usage_buckets(MINUTE)][b"not a field of ours"] = b"1"
    rows = asyncio.run(read_minutes(redis, KEYS, [MINUTE, MINUTE + 1]))  # type: ignore[arg-type]
    assert rows == [
        Usage(MINUTE * 60, "proj_a", "org|model", "key_1", False, "completions", 2, 30, 10, 7, 900),
        Usage(MINUTE * 60, "team", "e", "", True, "embeddings", 1, 4, 0, 0, 0),
    ]


def test_each_finished_minute_is_recorded_once_and_survives_redis_coming_back_empty(history: UsageHistory) -> None:
    redis = FakeRedis()
    flush = UsageFlush(CONFIG, history, redis)  # type: ignore[arg-type]
    prefix = usage_bucket_prefix("proj_a", "key_1", False, "completions", "m")
    count(redis, MINUTE, prefix, requests=1, input=10, output=2, cost=50)
    count(redis, MINUTE + 1, prefix, requests=3, input=30, cached=5, output=6, cost=150)
    now = (MINUTE + 2) * 60 + GRACE_SECONDS  # MINUTE + 1 ended GRACE_SECONDS ago: both are recorded
    assert asyncio.run(flush.flush(now - 1)) == KEPT_MINUTES  # the first flush reads what Redis keeps: up to MINUTE
    assert [row.start_time for row in recorded(history)] == [MINUTE * 60]
    assert asyncio.run(flush.flush(now)) == 1  # from the cursor on: MINUTE + 1 alone
    assert asyncio.run(flush.flush(now + 5)) == 0  # nothing new ended
    assert totals(recorded(history, "1d")) == {"num_model_requests": 4, "input_tokens": 40, "input_cached_tokens": 5,
                                               "output_tokens": 8, "cost": 200}  # fmt: skip
    # Redis comes back empty (its hashes, the cursor, gone): the minutes recorded stay as
    # they were, and flushing again (from what Redis keeps, nothing) changes nothing.
    redis.hashes.clear()
    redis.strings.clear()
    assert asyncio.run(flush.flush(now + 60)) == KEPT_MINUTES
    assert totals(recorded(history, "1d"))["num_model_requests"] == 4
    # A lost cursor with the hashes still there: recorded again, counted once.
    count(redis, MINUTE + 1, prefix, requests=3, input=30, cached=5, output=6, cost=150)
    asyncio.run(flush.flush(now + 60))
    assert totals(recorded(history, "1h"))["num_model_requests"] == 4


def test_one_process_flushes_at_a_time(history: UsageHistory) -> None:
    redis = FakeRedis()
    mine, other = UsageFlush(CONFIG, history, redis), UsageFlush(CONFIG, history, redis)  # type: ignore[arg-type]
    redis.strings[KEYS.usage_flush_lock] = b"another process"
    assert asyncio.run(mine.flush()) == 0 and KEYS.usage_flushed not in redis.strings
    del redis.strings[KEYS.usage_flush_lock]
    assert asyncio.run(other.flush()) > 0  # and the lock is let go after
    assert KEYS.usage_flush_lock not in redis.strings and KEYS.usage_flushed in redis.strings
