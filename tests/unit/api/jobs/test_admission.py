"""Admitting a job (api/jobs/admission.py): the limits on what it holds, the contract,
its tenant's quotas and the claim of its id, in that order; nothing queued before all
passed. The claim and the quotas in a fake Redis (tests/unit/api/edge.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from api.errors import JobConflict, LimitExceeded, QueueFull, TooManyRequests
from api.jobs.admission import check_job, check_tokens
from shared.config import Config
from shared.contract import InvalidJob, Job, TaskName
from shared.contract.scripts import ADMIT
from shared.tenants import Quotas, Tenant
from tests.unit.api.edge import config, running_parts

pytestmark = pytest.mark.unit

LIMITS = {
    "MAX_BODY_BYTES": "2048",
    "MAX_PROMPT_CHARS": "100",
    "MAX_MESSAGES": "3",
    "MAX_STOP_WORDS": "2",
    "MAX_STOP_WORD_CHARS": "5",
    "MAX_TOKENS_LIMIT": "50",
}
USER = {"role": "user", "content": "x"}
CONFIG = Config(_env_file=None, **{k.lower(): int(v) for k, v in LIMITS.items()})  # type: ignore[arg-type]


def test_a_job_within_the_limits_passes_them_all() -> None:
    check_job(CONFIG, {"messages": [USER] * 3, "meta": {"stop_words": ["abcde", "b"], "tokens_limit": 50}})
    check_job(CONFIG, {})  # the gateway's own jobs (llm.models) hold nothing


@pytest.mark.parametrize(
    ("job", "said"),
    [
        ({"content": "x" * 101}, "prompt: 101 characters; at most 100 (MAX_PROMPT_CHARS)"),
        ({"messages": [{"role": "user", "content": "x" * 60}] * 2}, "prompt: 120 characters"),
        ({"messages": [USER] * 4}, "messages: 4 messages; at most 3 (MAX_MESSAGES)"),
        ({"meta": {"stop_words": ["a", "b", "c"]}}, "stop_words: 3 words; at most 2 (MAX_STOP_WORDS)"),
        ({"meta": {"stop_words": ["abcdef"]}}, "a word of 6 characters; at most 5 (MAX_STOP_WORD_CHARS)"),
        ({"meta": {"tokens_limit": 51}}, "tokens_limit: 51; at most 50 (MAX_TOKENS_LIMIT)"),
        # OpenAI's bodies: content parts' text counts, and so does a list of prompts.
        ({"openai": {"messages": [{"role": "user", "content": [{"type": "text", "text": "x" * 101}]}]}},
         "prompt: 101 characters"),
        ({"openai": {"prompt": ["x" * 60, "y" * 41]}}, "prompt: 101 characters"),
        ({"openai": {"max_tokens": 51}}, "max_tokens: 51; at most 50"),  # the work a job asks (check_work)
    ],
)  # fmt: skip
def test_a_job_over_a_limit_is_refused_naming_it(job: dict[str, Any], said: str) -> None:
    with pytest.raises(LimitExceeded) as refused:
        check_job(CONFIG, job)
    assert said in refused.value.message


def test_a_count_of_tokens_beside_the_one_the_limit_comes_from_is_bounded_too() -> None:
    check_tokens(CONFIG, None, "max_tokens")
    check_tokens(CONFIG, 50, "max_tokens")
    with pytest.raises(LimitExceeded, match="max_tokens: 51; at most 50"):
        check_tokens(CONFIG, 51, "max_tokens")


def route_of(parts: Any, tenant: Tenant, content: str = "hi") -> Any:
    return parts.routing.route(TaskName.GENERATE, "j1", {"meta": {}, "content": content}, tenant)


def test_a_new_job_is_claimed_the_same_job_again_is_not_new_another_is_refused() -> None:
    async def main() -> None:
        async with running_parts() as parts:
            route, job = route_of(parts, Tenant("default"))
            first, typed = await parts.admission.admit(route, job, "replies:me")
            again, _ = await parts.admission.admit(route, job)
            assert (first.new, first.same, again.new, again.same) == (True, True, False, True)
            assert typed == Job.parse(job)  # what is sent: the job as the contract types it
            assert parts.redis.hashes[parts.config.keys.job("j1")][b"reply_to"] == b"replies:me"
            other, job = route_of(parts, Tenant("default"), "another body")
            with pytest.raises(JobConflict, match="'j1'"):
                await parts.admission.admit(other, job)

    asyncio.run(main())


def test_a_job_the_workers_would_refuse_is_never_claimed() -> None:
    async def main() -> None:
        async with running_parts() as parts:
            route, _ = route_of(parts, Tenant("default"))
            with pytest.raises(InvalidJob):
                await parts.admission.admit(route, {"meta": {"sampling": {"top_k": 3}}, "content": "x"})
            assert not parts.redis.hashes and not parts.redis.ran

    asyncio.run(main())


def test_a_tenant_over_its_quota_is_refused_before_its_job_is_claimed() -> None:
    async def main() -> None:
        async with running_parts() as parts:
            parts.redis.scripts[ADMIT] = lambda redis, keys, args: [b"jobs_in_flight", 2]
            tenant = Tenant("alpha", quotas=Quotas(jobs_in_flight=2))
            route, job = route_of(parts, tenant)
            with pytest.raises(TooManyRequests, match="quota jobs_in_flight: tenant 'alpha' has 2 jobs") as refused:
                await parts.admission.admit(route, job)
            assert refused.value.retry_after == 1
            assert parts.config.keys.job(route.key) not in parts.redis.hashes
            refusals = {"tenant": "alpha", "quota": "jobs_in_flight"}
            assert parts.metrics.registry.get_sample_value("llm_api_quota_refusals_total", refusals) == 1

    asyncio.run(main())


def test_a_job_refused_for_a_full_queue_gives_its_place_in_flight_back() -> None:
    async def main() -> None:
        async with running_parts(config(max_queued_jobs=1)) as parts:
            tenant = Tenant("alpha", quotas=Quotas(jobs_in_flight=5))
            in_flight = parts.config.keys.in_flight("alpha")
            parts.redis.zsets[parts.config.keys.queued] = {b"another-job": 9e9}  # the one place taken
            route, job = route_of(parts, tenant)
            parts.redis.zsets[in_flight] = {route.key.encode(): 1.0}  # as ADMIT counted it
            with pytest.raises(QueueFull, match="MAX_QUEUED_JOBS"):
                await parts.admission.admit(route, job)
            assert parts.redis.zsets[in_flight] == {}

    asyncio.run(main())


def test_a_job_released_frees_its_id_for_a_retry() -> None:
    async def main() -> None:
        async with running_parts() as parts:
            route, job = route_of(parts, Tenant("default"))
            await parts.admission.admit(route, job)
            assert await parts.admission.release(route)
            assert (await parts.admission.admit(route, job))[0].new
            parts.redis.down = True
            assert not await parts.admission.release(route)  # Redis away: the claim stays, until its TTL

    asyncio.run(main())
