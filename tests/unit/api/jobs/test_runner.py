"""Running a job (api/jobs/runner.py): admitted, watched for, queued once per key, and
answered whole or piece by piece; on a fake Redis and a fake broker (tests/unit/api/edge.py)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from api.errors import BrokerUnavailable, JobConflict, JobFailed, JobTimedOut
from api.http.statuses import status_of
from api.jobs.route import JobRoute
from api.jobs.runner import JobRunner
from shared.contract import CANCEL, STREAM_END, STREAM_INDEX, STREAM_TEXT, TaskName
from shared.tenants import Tenant
from tests.unit.api.edge import Parts, config, running_parts

pytestmark = pytest.mark.unit

TENANT = Tenant("default")
ANSWER = {"content": "echo: hi", "model": "m", "finish_reason": "stop", "usage": {"completion_tokens": 2}}


def routed(parts: Parts, job_id: str = "j1", content: str = "hi") -> tuple[JobRoute, dict[str, Any]]:
    return parts.routing.route(TaskName.GENERATE, job_id, {"meta": {"priority": 7}, "content": content}, TENANT)


def sample(parts: Parts, name: str, labels: dict[str, str]) -> float:
    return parts.metrics.registry.get_sample_value(name, labels) or 0.0


async def settled(runner: JobRunner) -> None:
    """The runner's own tasks (a stream's reader leaving) have ended."""
    await asyncio.gather(*runner._leaving)


def test_a_job_is_queued_once_on_its_models_queue_and_its_answer_returned() -> None:
    async def main() -> None:
        async with running_parts() as parts:
            parts.answer_every_job(lambda sent: ANSWER)
            route, job = routed(parts)
            answer = await parts.runner.run(route, job, 5)
            assert answer == ANSWER
            (sent,) = parts.broker.sent
            assert (sent.name, sent.task_id, sent.queue) == ("llm.generate", "j1", route.queue)
            # Its result comes back on this process's channel, and its time in the queue is measured.
            assert sent.job["reply_to"] == parts.runner.reply_channel and sent.job["accepted_at"] > 0
            assert sent.job["content"] == "hi" and sent.priority is not None
            assert not parts.published and parts.runner.awaiting == 0
            assert sample(parts, "llm_api_jobs_in_flight", {}) == 0
            assert sample(parts, "llm_api_jobs_total", {"model": "default", "outcome": "succeeded",
                                                        "tenant": "default"}) == 1  # fmt: skip

    asyncio.run(main())


def test_the_same_job_sent_twice_at_once_is_queued_once_and_both_get_its_answer() -> None:
    async def main() -> None:
        async with running_parts() as parts:
            route, job = routed(parts)
            accepted = [asyncio.Event(), asyncio.Event()]

            def queued(n: int) -> Any:
                async def told() -> None:
                    accepted[n].set()

                return told

            runs = [asyncio.create_task(parts.runner.run(route, job, 5, queued=queued(n))) for n in (0, 1)]
            await asyncio.gather(*(event.wait() for event in accepted))
            (sent,) = parts.broker.sent
            parts.answer(sent, ANSWER)
            assert await asyncio.gather(*runs) == [ANSWER, ANSWER]
            assert len(parts.broker.sent) == 1

    asyncio.run(main())


def test_a_job_id_used_again_with_another_body_is_refused_and_not_queued() -> None:
    async def main() -> None:
        async with running_parts() as parts:
            parts.answer_every_job(lambda sent: ANSWER)
            await parts.runner.run(*routed(parts), 5)
            with pytest.raises(JobConflict, match="'j1' is already used by a job with another body"):
                await parts.runner.run(*routed(parts, content="something else"), 5)
            assert len(parts.broker.sent) == 1

    asyncio.run(main())


def test_a_wait_that_ends_first_says_where_the_job_is_and_where_to_follow_it() -> None:
    async def main() -> None:
        async with running_parts(config(public_base_url="https://llm.example.com")) as parts:
            route, job = routed(parts)
            with pytest.raises(JobTimedOut) as waited:
                await parts.runner.run(route, job, 0.01)
            assert "did not finish within 0.01s; it is still queued (accepted " in waited.value.message
            assert ", position 1)" in waited.value.message
            assert waited.value.location == "https://llm.example.com/jobs/j1" and status_of(waited.value) == 504
            parts.redis.start(parts.config, "j1")
            with pytest.raises(JobTimedOut, match=r"it is still running \(since "):
                await parts.runner.run(route, job, 0.01)
            # The job goes on: the same request again follows it, not queuing it twice.
            parts.answer(parts.broker.sent[0], ANSWER)
            assert await parts.runner.run(route, job, 5) == ANSWER
            assert len(parts.broker.sent) == 1
            labels = {"model": "default", "outcome": "JobTimedOut", "tenant": "default"}
            assert sample(parts, "llm_api_jobs_total", labels) == 2

    asyncio.run(main())


def test_a_wait_not_counted_as_a_failure_is_not_counted() -> None:
    async def main() -> None:
        async with running_parts() as parts:
            with pytest.raises(JobTimedOut):
                await parts.runner.run(*routed(parts), 0.01, count_timeout=False)
            labels = {"model": "default", "outcome": "JobTimedOut", "tenant": "default"}
            assert sample(parts, "llm_api_jobs_total", labels) == 0

    asyncio.run(main())


def test_a_job_the_broker_refused_leaves_its_id_free_for_a_retry() -> None:
    async def main() -> None:
        async with running_parts() as parts:
            parts.broker.down = True
            with pytest.raises(BrokerUnavailable, match="not queued"):
                await parts.runner.run(*routed(parts), 5)
            assert parts.config.keys.job("j1") not in parts.redis.hashes  # its claim released
            parts.broker.down = False
            parts.answer_every_job(lambda sent: ANSWER)
            assert await parts.runner.run(*routed(parts), 5) == ANSWER
            assert len(parts.broker.sent) == 1

    asyncio.run(main())


def test_a_job_that_failed_on_its_worker_is_raised_with_the_contracts_status() -> None:
    async def main() -> None:
        async with running_parts() as parts:
            failure = {"exc_type": "ModelServerRejected", "exc_message": ["no such model: x", 404],
                       "exc_module": "shared.contract"}  # fmt: skip
            parts.broker.on_send = lambda sent: parts.answer(sent, failure, "FAILURE")
            with pytest.raises(JobFailed, match="no such model: x") as failed:
                await parts.runner.run(*routed(parts), 5)
            assert status_of(failed.value) == 404 and failed.value.cause == "ModelServerRejected"

    asyncio.run(main())


def test_a_job_resent_under_an_earlier_claim_is_queued_again_and_counted() -> None:
    # A batch's line driven again after the process that queued it died: its message may
    # never have been sent.
    async def main() -> None:
        async with running_parts() as parts:
            route, job = routed(parts)
            await parts.runner.submit(route, job)
            parts.answer_every_job(lambda sent: ANSWER)
            assert await parts.runner.run(route, job, 5, resend=True) == ANSWER
            assert [sent.task_id for sent in parts.broker.sent] == ["j1", "j1"]
            assert sample(parts, "llm_api_jobs_requeued_total", {"reason": "resent", "refused": "false"}) == 1

    asyncio.run(main())


def test_a_job_submitted_without_waiting_is_marked_for_the_webhooks_that_take_jobs() -> None:
    async def main() -> None:
        async with running_parts(notify_jobs=True) as parts:
            route, job = routed(parts)
            await parts.runner.submit(route, job)
            (sent,) = parts.broker.sent
            assert sent.job["notify"] is True and "reply_to" not in sent.job
            claim = parts.redis.hashes[parts.config.keys.job("j1")]
            assert claim[b"notify"] == b"1" and claim[b"background"] == b"1"
            await parts.runner.submit(route, job)  # the same job again: nothing more queued
            assert len(parts.broker.sent) == 1

    asyncio.run(main())


def stream_piece(parts: Parts, key: str, index: int, text: str) -> None:
    parts.redis.xadd_now(parts.config.keys.stream(key), {STREAM_INDEX: index, STREAM_TEXT: text})


def test_a_stream_says_accepted_then_gives_each_piece_then_the_end() -> None:
    async def main() -> None:
        async with running_parts() as parts:
            route, job = routed(parts)
            events = parts.runner.stream(route, job)
            assert await anext(events) == {"accepted": True}
            (sent,) = parts.broker.sent
            assert sent.job["stream"] is True and sent.job["reply_to"] == parts.runner.reply_channel
            stream_piece(parts, "j1", 0, "echo")
            stream_piece(parts, "j1", 0, ": hi")
            parts.redis.xadd_now(parts.config.keys.stream("j1"), {STREAM_END: json.dumps(ANSWER)})
            got = [event async for event in events]
            assert [(e.get("index"), e.get("text")) for e in got[:2]] == [(0, "echo"), (0, ": hi")]
            assert got[2]["end"] == ANSWER and len(got) == 3
            await settled(parts.runner)
            assert parts.config.keys.stream_readers("j1") not in parts.redis.strings  # no reader left
            assert not any(text == CANCEL for text, _, _ in parts.redis.ran)

    asyncio.run(main())


def test_a_reader_that_leaves_its_stream_before_the_end_cancels_its_job() -> None:
    async def main() -> None:
        async with running_parts(config(stream_leave_grace=0)) as parts:
            route, job = routed(parts)
            events = parts.runner.stream(route, job)
            await anext(events)
            stream_piece(parts, "j1", 0, "echo")
            assert (await anext(events))["text"] == "echo"
            await events.aclose()  # the client went away
            assert await parts.redis.heard(parts.config.keys.cancel) == b"j1"
            assert (await parts.store.status("j1"))["status"] == "cancelled"

    asyncio.run(main())


def test_a_reader_of_a_job_queued_in_the_background_leaves_it_running() -> None:
    async def main() -> None:
        async with running_parts(config(stream_leave_grace=0)) as parts:
            route, job = routed(parts)
            await parts.runner.submit(route, job)
            events = parts.runner.stream(route, None)  # following it, as a resumed stream does
            assert await anext(events) == {"accepted": True}
            await events.aclose()
            await settled(parts.runner)
            assert (await parts.store.status("j1"))["status"] == "queued"
            assert len(parts.broker.sent) == 1

    asyncio.run(main())


def test_a_stream_refused_before_its_job_is_queued_leaves_no_reader_counted() -> None:
    async def main() -> None:
        async with running_parts() as parts:
            parts.answer_every_job(lambda sent: ANSWER)
            await parts.runner.run(*routed(parts), 5)
            events = parts.runner.stream(*routed(parts, content="another body"))
            with pytest.raises(JobConflict):
                await anext(events)
            assert parts.config.keys.stream_readers("j1") not in parts.redis.strings

    asyncio.run(main())


def test_cancel_answers_what_became_of_the_job() -> None:
    async def main() -> None:
        async with running_parts() as parts:
            assert await parts.runner.cancel("nothing-here") == "unknown"
            route, job = routed(parts)
            await parts.runner.submit(route, job)
            assert await parts.runner.cancel("j1") == "cancelled"
            assert await parts.runner.cancel("j1") == "finished"

    asyncio.run(main())
