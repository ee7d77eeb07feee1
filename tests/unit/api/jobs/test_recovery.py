"""Jobs a Redis broker lost, queued again (api/jobs/recovery.py): only those with no
result, not running, whose queue is empty and whose message no worker holds; each
queuing again counted. On the real job parts over a fake Redis and broker."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from api.jobs.recovery import LostJobs
from shared.contract import TaskName
from shared.tenants import Tenant
from tests.unit.api.edge import Parts, config, running_parts

pytestmark = pytest.mark.unit


def lost_jobs(parts: Parts) -> LostJobs:
    return LostJobs(parts.config, parts.redis, parts.queue, parts.waiter, parts.published, parts.requeues,  # type: ignore[arg-type]
                    parts.fair)  # fmt: skip


async def submitted(parts: Parts, job_id: str) -> Any:
    route, job = parts.routing.route(TaskName.GENERATE, job_id, {"meta": {}, "content": "x"}, Tenant("default"))
    await parts.runner.submit(route, job)
    parts.published[route.key].job["accepted_at"] -= 10 * parts.config.job_lease  # accepted long ago
    return route


def requeued(parts: Parts) -> list[str]:
    """The jobs published more than once, each as often as it was published again."""
    ids = [sent.task_id for sent in parts.broker.sent]
    return [task_id for n, task_id in enumerate(ids) if task_id in ids[:n]]


def test_a_job_whose_message_is_gone_is_queued_again_once_and_counted() -> None:
    async def main() -> None:
        async with running_parts() as parts:
            await submitted(parts, "lost")
            await lost_jobs(parts).requeue_lost()
            assert requeued(parts) == ["lost"]
            assert parts.broker.sent[1].job == parts.broker.sent[0].job  # as it was sent
            counted = {"reason": "broker", "refused": "false"}
            assert parts.metrics.registry.get_sample_value("llm_api_jobs_requeued_total", counted) == 1

    asyncio.run(main())


def test_a_job_that_may_still_be_queued_held_or_running_is_left_alone() -> None:
    async def main() -> None:
        async with running_parts() as parts:
            waiting = await submitted(parts, "waiting")
            parts.broker.depths[waiting.queue] = 1  # its queue holds messages: it may be one of them
            await lost_jobs(parts).requeue_lost()
            parts.broker.depths.clear()
            held = {"headers": {"id": "held"}}
            await submitted(parts, "held")
            parts.redis.hashes[parts.config.keys.unacked] = {b"tag": json.dumps([held, "", ""]).encode()}
            await submitted(parts, "running")
            parts.redis.start(parts.config, "running")
            await parts.redis.set(parts.config.keys.lease("running"), "worker-1")  # a live worker holds it
            await lost_jobs(parts).requeue_lost()
            assert requeued(parts) == ["waiting"]  # only once its queue was empty

    asyncio.run(main())


def test_a_job_nobody_awaits_is_forgotten_once_answered_or_deleted() -> None:
    async def main() -> None:
        async with running_parts() as parts:
            await submitted(parts, "answered")
            await submitted(parts, "deleted")
            parts.redis.finish(parts.config, "answered", result={"content": "x"})
            del parts.redis.hashes[parts.config.keys.job("deleted")]
            parts.redis.zsets[parts.config.keys.queued].clear()
            await lost_jobs(parts).requeue_lost()
            assert not parts.published and len(parts.broker.sent) == 2

    asyncio.run(main())


def test_a_batch_line_awaited_again_is_queued_again_only_when_its_message_is_gone() -> None:
    async def main() -> None:
        async with running_parts() as parts:
            route = await submitted(parts, "line")
            job = parts.published[route.key].job
            assert await lost_jobs(parts).queue_again_if_lost(route, job, "replies:me")
            assert parts.broker.sent[-1].job["reply_to"] == "replies:me"
            parts.redis.start(parts.config, "line")
            assert not await lost_jobs(parts).queue_again_if_lost(route, job, "replies:me")  # started: not lost
        async with running_parts(config(rabbit_mq_host="rabbit")) as parts:
            assert not await lost_jobs(parts).queue_again_if_lost(route, job, "")  # RabbitMQ loses none it confirmed

    asyncio.run(main())
