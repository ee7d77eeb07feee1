"""``GET /usage`` (api/tenancy/usage_router.py): a tenant's own usage, an admin's every
tenant's, over the days asked within those kept."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.routing import APIRoute

from api.errors import Forbidden, InvalidInput
from api.tenancy.usage_router import usage_router
from shared.contract.keys import usage_minute
from shared.tenants import Tenant, Tenants
from tests.unit.api.edge import FakeRedis, config

pytestmark = pytest.mark.unit

SETTINGS = config(usage_days=30)
KEYED = Tenants(by_digest={b"k": Tenant("alpha")})


def endpoint(redis: FakeRedis, tenants: Tenants = KEYED) -> Any:
    (route,) = usage_router(SETTINGS, tenants, redis, APIRoute).routes  # type: ignore[arg-type]
    return route.endpoint  # type: ignore[attr-defined]


def test_a_tenant_reads_its_own_usage_and_an_admin_any_tenants() -> None:
    redis = FakeRedis()
    redis.hashes[SETTINGS.keys.usage("2030-01-02")] = {b"alpha|m|jobs": b"1", b"beta|m|jobs": b"4"}
    get = endpoint(redis)
    mine = asyncio.run(get(Tenant("alpha"), "2030-01-01", "2030-01-02"))
    assert [r["tenant"] for r in mine["data"]] == ["alpha"]
    assert (mine["start"], mine["end"]) == ("2030-01-01", "2030-01-02")
    with pytest.raises(Forbidden, match="sees its own usage only"):
        asyncio.run(get(Tenant("alpha"), "2030-01-01", "2030-01-02", "beta"))
    every = asyncio.run(get(Tenant("ops", admin=True), "2030-01-01", "2030-01-02"))
    assert [r["tenant"] for r in every["data"]] == ["alpha", "beta"]
    beta = asyncio.run(get(Tenant("ops", admin=True), "2030-01-01", "2030-01-02", "beta"))
    assert [r["jobs"] for r in beta["data"]] == [4]
    assert len(asyncio.run(endpoint(redis, Tenants())(Tenant("default"), "2030-01-02", "2030-01-02"))["data"]) == 2


def test_the_days_default_to_the_last_week_and_never_reach_before_those_kept() -> None:
    get = endpoint(FakeRedis())
    today = datetime.now(UTC).date()
    week = asyncio.run(get(Tenant("alpha")))
    assert (week["start"], week["end"]) == ((today - timedelta(days=6)).isoformat(), today.isoformat())
    kept = asyncio.run(get(Tenant("alpha"), "2000-01-01", "2030-12-31"))
    assert kept["start"] == "2030-12-02"  # 30 days kept
    for start, end, said in (("yesterday", None, "start: 'yesterday' is not a day"),
                             (None, "0001-01-02", "earlier than any day usage is kept for")):  # fmt: skip
        with pytest.raises(InvalidInput, match=said):
            asyncio.run(get(Tenant("alpha"), start, end))


def test_per_minute_answers_the_last_sixty_minutes_of_the_minutes_hashes() -> None:
    redis = FakeRedis()
    now = time.time()
    seeded = [usage_minute(now - 60 * back) for back in (60, 59, 0)]
    for minute in seeded:
        redis.hashes[SETTINGS.keys.usage_of_minute(minute)] = {b"alpha|m|jobs": b"2", b"alpha|m|failed": b"1",
                                                              b"beta|m|jobs": b"5"}  # fmt: skip
    get = endpoint(redis)
    mine = asyncio.run(get(Tenant("alpha"), per="minute"))
    end = datetime.strptime(mine["end"], "%Y-%m-%dT%H:%MZ").replace(tzinfo=UTC)
    window = [usage_minute((end - timedelta(minutes=back)).timestamp()) for back in reversed(range(60))]
    assert (mine["per"], mine["start"]) == ("minute", window[0])
    assert mine["end"] in (seeded[-1], usage_minute(now + 60))  # the minute may turn while it is asked
    # Each minute of the window that has usage, in order; the tenant's own only.
    assert [(r["minute"], r["tenant"], r["jobs"], r["failed"]) for r in mine["data"]] == [
        (minute, "alpha", 2, 1) for minute in seeded if minute in window
    ]
    assert mine["data"] and mine["data"][-1]["minute"] == seeded[-1]
    every = asyncio.run(get(Tenant("ops", admin=True), per="minute"))
    assert {r["tenant"] for r in every["data"]} == {"alpha", "beta"}
    with pytest.raises(InvalidInput, match="per=minute answers the last 60 minutes"):
        asyncio.run(get(Tenant("alpha"), "2030-01-01", per="minute"))
