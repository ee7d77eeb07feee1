"""A job's path through the API's parts, without an API process or a worker: the parts
built as `get_router` builds them, on the machine's broker and Redis, and the worker's
part played by the contract's own script (STORE_ONCE) writing the result."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from api.errors import JobConflict, LimitExceeded, QueueFull, TooManyRequests
from api.jobs.route import JobRoute
from api.services import Services
from shared.config import Config
from shared.contract import STORE_ONCE, State, TaskName
from shared.storage import redis_clients
from shared.tenants import Quotas, Tenant
from testing.processes import config_from_env, remove_traces
from tests.conftest import stack_env

pytestmark = pytest.mark.integration


@pytest.fixture
def config(broker_env: dict[str, str]) -> Iterator[Config]:
    made = config_from_env(stack_env(broker_env, "http://127.0.0.1:9", MAX_QUEUED_JOBS="3", MAX_PROMPT_CHARS="50"))
    yield made
    remove_traces(made)


def store_result(config: Config, key: str, answer: dict[str, Any]) -> None:
    """What a worker does as a job ends: its result stored once and published."""
    client = redis_clients.sync_client(config)
    result = json.dumps({"status": State.SUCCESS, "result": answer, "task_id": key})
    client.register_script(STORE_ONCE)(keys=[config.keys.result(key), config.keys.job(key)], args=[result, 60, ""])
    client.close()


async def in_parts(config: Config, scenario: Any) -> Any:
    parts = Services.build(config)
    async with parts.running():
        return await scenario(parts)


def test_a_job_is_claimed_queued_and_answered_once_its_result_is_stored(config: Config) -> None:
    async def scenario(parts: Services) -> tuple[Any, ...]:
        route, job = parts.routing.route(TaskName.GENERATE, "p1", {"meta": {}, "content": "hi"}, Tenant("alpha"))
        running = asyncio.create_task(parts.runner.run(route, job, 10))
        for _ in range(200):  # until it is on the model's queue (published, confirmed)
            depth = await asyncio.get_running_loop().run_in_executor(None, parts.queue.depths, [route.queue])
            if depth[route.queue] == 1:
                break
            await asyncio.sleep(0.02)
        status = await parts.store.status(route.key)
        store_result(config, route.key, {"content": "hello"})
        answer = await asyncio.wait_for(running, 10)
        # The same job again: followed to the answer it has, not queued again.
        again = await parts.runner.run(route, job, 10)
        after = await asyncio.get_running_loop().run_in_executor(None, parts.queue.depths, [route.queue])
        return route.key, depth[route.queue], status["status"], status["tenant"], answer, again, after[route.queue]

    key, depth, status, tenant, answer, again, after = asyncio.run(in_parts(config, scenario))
    assert (key, depth, status, tenant) == ("alpha~p1", 1, "queued", "alpha")
    assert answer == again == {"content": "hello"} and after == 1


def test_admission_refuses_before_anything_is_queued_or_claimed(config: Config) -> None:
    async def scenario(parts: Services) -> list[str]:
        seen = []
        tenant = Tenant("alpha")

        async def submit(job_id: str, body: dict[str, Any], who: Tenant = tenant) -> JobRoute:
            route, job = parts.routing.route(TaskName.GENERATE, job_id, body, who)
            await parts.runner.submit(route, job)
            return route

        with pytest.raises(LimitExceeded, match="MAX_PROMPT_CHARS"):
            await submit("long", {"meta": {}, "content": "x" * 51})
        seen.append(str(await parts.store.status("alpha~long")))
        await submit("a", {"meta": {}, "content": "one"})
        with pytest.raises(JobConflict, match="another body"):
            await submit("a", {"meta": {}, "content": "two"})
        await submit("a", {"meta": {}, "content": "one"})  # the same job: nothing more to do
        # Another tenant's same id is another job.
        await submit("a", {"meta": {}, "content": "two"}, Tenant("beta"))
        await submit("b", {"meta": {}, "content": "three"})
        with pytest.raises(QueueFull) as full:
            await submit("c", {"meta": {}, "content": "four"})
        seen.append(f"retry after {full.value.retry_after}")
        depth = await asyncio.get_running_loop().run_in_executor(None, parts.queue.depths, [config.queue_name])
        seen.append(f"queued {depth[config.queue_name]}")
        return seen

    assert asyncio.run(in_parts(config, scenario)) == ["None", "retry after 2", "queued 3"]


def test_a_tenants_jobs_in_flight_quota_is_given_back_when_its_job_ends(
    broker_env: dict[str, str], tmp_path: Path
) -> None:
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"tenants": [{"name": "alpha", "keys": ["k-a"], "quotas": {"jobs_in_flight": 1}}]}))
    config = config_from_env(stack_env(broker_env, "http://127.0.0.1:9", API_KEYS_FILE=str(keys)))

    async def scenario(parts: Services) -> list[str]:
        alpha = parts.guard.tenants.named["alpha"]
        assert alpha.quotas == Quotas(jobs_in_flight=1, max_priority=5)  # TENANT_MAX_PRIORITY by default
        first, job = parts.routing.route(TaskName.GENERATE, "q1", {"meta": {}, "content": "one"}, alpha)
        await parts.runner.submit(first, job)
        second, job2 = parts.routing.route(TaskName.GENERATE, "q2", {"meta": {}, "content": "two"}, alpha)
        with pytest.raises(TooManyRequests, match="jobs_in_flight") as refused:
            await parts.runner.submit(second, job2)
        store_result(config, first.key, {"content": "done", "usage": {}})
        # Answered: no longer in flight (the quota's count drops answered jobs).
        await parts.runner.submit(second, job2)
        return [f"retry after {refused.value.retry_after}"]

    try:
        assert asyncio.run(in_parts(config, scenario)) == ["retry after 1"]
    finally:
        remove_traces(config)
