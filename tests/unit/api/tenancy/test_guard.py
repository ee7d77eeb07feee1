"""Who is asking, and whether they may (api/tenancy/guard.py): API keys, tenants, rate
limits and the operators' endpoints; the rate counted in a fake Redis (tests/unit/api/edge.py)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from api.errors import Forbidden, ResultStoreUnavailable, TooManyRequests, Unauthorized
from api.http.statuses import refusal
from api.observability.metrics import Metrics
from api.tenancy.guard import Guard
from shared.config import Config
from shared.tenants import EVERYONE
from tests.unit.api.edge import FakeRedis, config

pytestmark = pytest.mark.unit

TENANTS = """tenants:
  - {name: alpha, keys: [alpha-key], quotas: {requests_per_minute: 2}}
  - {name: ops, keys: [ops-key], admin: true}
"""


def keyed(tmp_path: Path, metrics: Metrics | None = None, **settings: object) -> tuple[Guard, FakeRedis]:
    path = tmp_path / "tenants.yaml"
    path.write_text(TENANTS)
    redis = FakeRedis()
    return Guard(config(api_keys_file=str(path), **settings), redis, metrics or Metrics()), redis  # type: ignore[arg-type]


def test_without_keys_the_api_says_it_is_open(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        Guard(Config(_env_file=None), FakeRedis(), Metrics())  # type: ignore[call-arg, arg-type]
    assert "no API keys configured" in caplog.text


def test_a_key_names_its_tenant_and_a_missing_or_wrong_key_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        guard, _ = keyed(tmp_path)
    assert "API keys: 2 configured, of 2 tenants (alpha, ops)" in caplog.text and "alpha-key" not in caplog.text
    assert asyncio.run(guard.admit("Bearer alpha-key", "10.0.0.1")).name == "alpha"
    assert asyncio.run(guard.admit("bearer  ops-key ", "")).admin
    with pytest.raises(Unauthorized, match="missing API key") as missing:
        asyncio.run(guard.admit("", "10.0.0.1"))
    assert refusal(missing.value).headers == {"WWW-Authenticate": "Bearer"}
    for wrong in ("Bearer nope", "Basic alpha-key", "alpha-key"):
        with pytest.raises(Unauthorized):
            asyncio.run(guard.admit(wrong, ""))


def test_a_tenants_requests_past_its_rate_are_refused_saying_when_to_try_again(tmp_path: Path) -> None:
    metrics = Metrics()
    guard, redis = keyed(tmp_path, metrics)

    async def three() -> None:
        for _ in range(2):
            await guard.admit("Bearer alpha-key", "10.0.0.1")
        await guard.admit("Bearer alpha-key", "10.0.0.1")

    with pytest.raises(TooManyRequests, match=r"tenant 'alpha' may send 2 requests per minute") as refused:
        asyncio.run(three())
    assert 1 <= refused.value.retry_after <= 61  # type: ignore[operator]
    assert "quota requests_per_minute" in refused.value.message
    # Counted among the tenant's quota refusals, as it is worded.
    counted = {"tenant": "alpha", "quota": "requests_per_minute"}
    assert metrics.registry.get_sample_value("llm_api_quota_refusals_total", counted) == 1
    # Counted per tenant, whatever the address; a tenant without a rate is not counted.
    assert all(":tenant:alpha:" in key for key in redis.strings)
    asyncio.run(guard.admit("Bearer ops-key", "10.0.0.1"))
    assert len(redis.strings) == 1


def test_without_keys_the_rate_is_counted_per_client_address() -> None:
    redis = FakeRedis()
    guard = Guard(config(rate_limit_per_minute=1), redis, Metrics())  # type: ignore[arg-type]
    asyncio.run(guard.admit("", "10.0.0.1"))
    asyncio.run(guard.admit("", "10.0.0.2"))
    with pytest.raises(TooManyRequests, match="RATE_LIMIT_PER_MINUTE"):
        asyncio.run(guard.admit("", "10.0.0.1"))


def test_a_rate_that_cannot_be_counted_is_a_503_not_a_pass(tmp_path: Path) -> None:
    guard, redis = keyed(tmp_path)
    redis.down = True
    with pytest.raises(ResultStoreUnavailable):
        asyncio.run(guard.admit("Bearer alpha-key", ""))


def test_the_operators_endpoints_answer_admin_keys_and_the_metrics_token(tmp_path: Path) -> None:
    guard, _ = keyed(tmp_path, metrics_token="scrape-token")
    asyncio.run(guard.operator("Bearer ops-key"))
    asyncio.run(guard.operator("Bearer scrape-token"))
    with pytest.raises(Forbidden, match="not a tenant's key"):
        asyncio.run(guard.operator("Bearer alpha-key"))
    with pytest.raises(Unauthorized):
        asyncio.run(guard.operator(""))


def test_without_keys_the_operators_endpoints_need_the_metrics_token_only_when_set() -> None:
    asyncio.run(Guard(config(), FakeRedis(), Metrics()).operator(""))  # type: ignore[arg-type]
    guarded = Guard(config(metrics_token="t0k"), FakeRedis(), Metrics())  # type: ignore[arg-type]
    with pytest.raises(Unauthorized, match="METRICS_TOKEN"):
        asyncio.run(guarded.operator("Bearer wrong"))
    asyncio.run(guarded.operator("Bearer t0k"))


def test_a_tenant_sees_its_own_files_and_an_admin_or_an_open_api_every_ones(tmp_path: Path) -> None:
    guard, _ = keyed(tmp_path)
    alpha = guard.owner(guard.tenants.named["alpha"])
    assert alpha.name == "tenant:alpha" and alpha.sees("tenant:alpha") and not alpha.sees("tenant:ops")
    assert any(owned.startswith("key:") for owned in alpha.also)  # what its key owned before tenants
    assert guard.owner(guard.tenants.named["ops"]).every
    open_guard = Guard(config(), FakeRedis(), Metrics())  # type: ignore[arg-type]
    assert open_guard.owner(open_guard.tenants.named["default"]) is EVERYONE
