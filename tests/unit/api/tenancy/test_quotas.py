"""A tenant's quotas (api/tenancy/quotas.py): jobs in flight and tokens per minute and
day refused with the quota named and when to try again, a project's rate limits per model
in the same call (OpenAI's rate_limit_exceeded), and the streams its clients read at
once; the contract's scripts answer in a fake Redis (tests/unit/api/edge.py)."""

from __future__ import annotations

import asyncio
import time

import pytest

from api.errors import RateLimitExceeded, ResultStoreUnavailable, TooManyRequests
from api.observability.metrics import Metrics
from api.tenancy.quotas import Quotas
from shared.contract.scripts import ADMIT
from shared.tenants import ModelLimits, Tenant
from shared.tenants import Quotas as TenantQuotas
from testing.scripted_redis import arity
from tests.unit.api.edge import FakeRedis, config

pytestmark = pytest.mark.unit

CAPPED = Tenant("alpha", quotas=TenantQuotas(tokens_per_minute=1000, tokens_per_day=5000, jobs_in_flight=2,
                                             streams_in_flight=1))  # fmt: skip


def quotas_of(shared: bool = True, **settings: object) -> tuple[Quotas, FakeRedis, Metrics]:
    redis, metrics = FakeRedis(), Metrics()
    return Quotas(config(**settings), redis, metrics, shared=shared), redis, metrics  # type: ignore[arg-type]


def test_a_tenant_without_quotas_is_never_counted() -> None:
    quotas, redis, _ = quotas_of()
    asyncio.run(quotas.admit(Tenant("free"), "free~j1"))
    asyncio.run(quotas.release(Tenant("free"), "free~j1"))
    assert not redis.ran and not Quotas.applies(Tenant("free")) and Quotas.applies(CAPPED)


@pytest.mark.parametrize(
    ("refused", "said", "most_retry"),
    [
        ([b"jobs_in_flight", 2], "quota jobs_in_flight: tenant 'alpha' has 2 jobs queued or running, at most 2", 1),
        ([b"tokens_per_minute", 1200], "quota tokens_per_minute: tenant 'alpha' has used 1200 tokens this minute,"
                                       " at most 1000", 61),
        ([b"tokens_per_day", 5100], "tokens this UTC day, at most 5000", 86401),
    ],
)  # fmt: skip
def test_a_quota_reached_is_refused_naming_it_and_when_to_try_again(refused: list, said: str, most_retry: int) -> None:
    quotas, redis, metrics = quotas_of()
    redis.scripts[ADMIT] = lambda *_: refused
    with pytest.raises(TooManyRequests) as raised:
        asyncio.run(quotas.admit(CAPPED, "alpha~j1"))
    assert said in raised.value.message and 1 <= raised.value.retry_after <= most_retry  # type: ignore[operator]
    ((_, keys, args),) = redis.ran
    assert keys[0] == config().keys.in_flight("alpha") and args[0] == "alpha~j1" and args[2:5] == [2, 1000, 5000]
    counted = {"tenant": "alpha", "quota": refused[0].decode()}
    assert metrics.registry.get_sample_value("llm_api_quota_refusals_total", counted) == 1


def test_a_job_admitted_then_not_queued_gives_its_place_back() -> None:
    quotas, redis, _ = quotas_of()
    redis.zsets[config().keys.in_flight("alpha")] = {b"alpha~j1": 1.0, b"alpha~j2": 2.0}
    asyncio.run(quotas.release(CAPPED, "alpha~j1"))
    assert redis.zsets[config().keys.in_flight("alpha")] == {b"alpha~j2": 2.0}
    redis.down = True
    asyncio.run(quotas.release(CAPPED, "alpha~j2"))  # Redis away: dropped by age later, not raised


def test_a_tenants_streams_are_bounded_and_a_reader_leaving_frees_its_place() -> None:
    async def main() -> None:
        quotas, redis, _ = quotas_of()
        token = await quotas.join_stream(CAPPED, "alpha~j1")
        with pytest.raises(TooManyRequests, match="quota streams_in_flight: tenant 'alpha' reads 1 streams"):
            await quotas.join_stream(CAPPED, "alpha~j2")
        assert await quotas.leave_stream(CAPPED, "alpha~j1", token) == 0
        other = await quotas.join_stream(CAPPED, "alpha~j2")
        redis.down = True
        assert await quotas.leave_stream(CAPPED, "alpha~j2", other) == 1  # cannot say: not cancelled on a guess
        with pytest.raises(ResultStoreUnavailable):
            await quotas.join_stream(CAPPED, "alpha~j3")

    asyncio.run(main())


def test_the_deployments_streams_limit_is_every_tenants_only_when_tenants_share_it() -> None:
    shared, _, _ = quotas_of(streams_in_flight=7)
    alone, _, _ = quotas_of(shared=False, streams_in_flight=7)
    assert shared.streams_limit(Tenant("free")) == 7 and alone.streams_limit(Tenant("free")) == 0
    assert shared.streams_limit(CAPPED) == 1


LIMITED = Tenant("proj_a", model_limits={"big": ModelLimits(20, 1000, 500, 0), "batchy": ModelLimits(0, 0, 0, 9)})


def test_a_project_without_a_limit_on_the_model_it_asks_for_is_not_counted() -> None:
    quotas, redis, _ = quotas_of()
    for model in ("small", "batchy", ""):  # no limit; a limit on its batches only; no model
        asyncio.run(quotas.admit(LIMITED, "proj_a~j1", model))
        asyncio.run(quotas.release(LIMITED, "proj_a~j1", model))
    assert not redis.ran and not redis.hashes


def test_a_projects_limits_on_a_model_go_to_the_one_admit_call_with_the_models_windows() -> None:
    quotas, redis, _ = quotas_of()
    asyncio.run(quotas.admit(LIMITED, "proj_a~j1", "big"))
    ((_, keys, args),) = redis.ran
    now = time.time()
    keys_of = config().keys
    assert keys[:3] == [keys_of.in_flight("proj_a"), *keys_of.token_windows("proj_a", now)]
    assert keys[3:] in ([*keys_of.model_use_windows("proj_a", at)] for at in (now - 60, now))
    assert (len(keys), len(args)) == arity("ADMIT")
    assert args[2:5] == [0, 0, 0] and args[7:] == ["big|", 20, 1000, 500]


@pytest.mark.parametrize(
    ("limit", "kind", "said", "most_retry"),
    [
        ("max_requests_per_1_minute", "requests", "on requests per min (RPM): Limit 20, Used 20", 61),
        ("max_tokens_per_1_minute", "tokens", "on tokens per min (TPM): Limit 1000, Used 20 (max_tokens", 61),
        ("max_requests_per_1_day", "requests", "on requests per day (RPD): Limit 500, Used 20", 86401),
    ],
)
def test_a_models_limit_reached_is_openais_rate_limit_exceeded_naming_the_limit_and_the_model(
    limit: str, kind: str, said: str, most_retry: int
) -> None:
    quotas, redis, metrics = quotas_of()
    redis.scripts[ADMIT] = lambda *_: [limit.encode(), 20]
    with pytest.raises(RateLimitExceeded) as raised:
        asyncio.run(quotas.admit(LIMITED, "proj_a~j1", "big"))
    refused = raised.value
    assert refused.error_code == "rate_limit_exceeded" and refused.error_type == kind
    assert "Rate limit reached for big in project proj_a" in refused.message and said in refused.message
    assert limit in refused.message and 1 <= refused.retry_after <= most_retry  # type: ignore[operator]
    counted = {"tenant": "proj_a", "quota": limit}
    assert metrics.registry.get_sample_value("llm_api_quota_refusals_total", counted) == 1


def test_a_request_admitted_then_not_queued_gives_its_count_back() -> None:
    quotas, redis, _ = quotas_of()
    now = time.time()
    minute, day = config().keys.model_use_windows("proj_a", now)
    redis.hashes[minute] = {b"big|requests": b"3"}
    redis.hashes[day] = {b"big|requests": b"7"}
    asyncio.run(quotas.release(LIMITED, "proj_a~j1", "big"))
    if config().keys.model_use_windows("proj_a", time.time()) == [minute, day]:  # not a minute later
        assert redis.hashes[minute] == {b"big|requests": b"2"} and redis.hashes[day] == {b"big|requests": b"6"}
    redis.down = True
    asyncio.run(quotas.release(LIMITED, "proj_a~j2", "big"))  # Redis away: not raised
