"""What tenants used (api/tenancy/usage.py): the workers' counts per UTC day (or minute),
tenant and model, read back in order; in a fake Redis (tests/unit/api/edge.py)."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta

import pytest

from api.errors import ResultStoreUnavailable
from api.tenancy.usage import usage
from tests.unit.api.edge import FakeRedis, config

pytestmark = pytest.mark.unit

SETTINGS = config()


def counted(redis: FakeRedis, day: str, **fields: int) -> None:
    redis.hashes[SETTINGS.keys.usage(day)] = {name.replace("__", "|").encode(): str(n).encode()
                                               for name, n in fields.items()}  # fmt: skip


def days(first: str, last: str) -> list[tuple[str, str]]:
    start, end = date.fromisoformat(first), date.fromisoformat(last)
    named = [(start + timedelta(days=n)).isoformat() for n in range(max(0, (end - start).days + 1))]
    return [(day, SETTINGS.keys.usage(day)) for day in named]


def test_each_days_usage_per_tenant_and_model_in_order_with_its_total() -> None:
    redis = FakeRedis()
    counted(redis, "2030-01-01", beta__m__jobs=1, alpha__m__jobs=2, alpha__m__prompt_tokens=10,
            alpha__m__completion_tokens=5, alpha__m__unknown_count=9)  # fmt: skip
    counted(redis, "2030-01-03", alpha__m__failed=1)
    rows = asyncio.run(usage(redis, days("2030-01-01", "2030-01-03"), None))  # type: ignore[arg-type]
    assert [(r["date"], r["tenant"]) for r in rows] == [("2030-01-01", "alpha"), ("2030-01-01", "beta"),
                                                         ("2030-01-03", "alpha")]  # fmt: skip
    assert rows[0] == {"date": "2030-01-01", "tenant": "alpha", "model": "m", "jobs": 2, "failed": 0,
                       "prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}  # fmt: skip
    only_beta = asyncio.run(usage(redis, days("2030-01-01", "2030-01-03"), {"beta"}))  # type: ignore[arg-type]
    assert [r["tenant"] for r in only_beta] == ["beta"]
    assert asyncio.run(usage(redis, days("2030-01-03", "2030-01-01"), None)) == []  # type: ignore[arg-type]


def test_a_minutes_usage_is_read_the_same_way_and_named_by_its_minute() -> None:
    redis = FakeRedis()
    minute = "2030-01-01T10:07Z"
    redis.hashes[SETTINGS.keys.usage_of_minute(minute)] = {b"alpha|m|jobs": b"3"}
    buckets = [(minute, SETTINGS.keys.usage_of_minute(minute)), ("2030-01-01T10:08Z", "nothing")]
    rows = asyncio.run(usage(redis, buckets, None, named="minute"))  # type: ignore[arg-type]
    assert [(r["minute"], r["tenant"], r["jobs"]) for r in rows] == [(minute, "alpha", 3)] and "date" not in rows[0]


def test_usage_that_cannot_be_read_is_a_503() -> None:
    redis = FakeRedis()
    redis.down = True
    with pytest.raises(ResultStoreUnavailable):
        asyncio.run(usage(redis, days("2030-01-01", "2030-01-01"), None))  # type: ignore[arg-type]
