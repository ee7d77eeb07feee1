"""Jobs in Redis (api/jobs/store.py): what makes two requests the same job, the claim of
an id, and a job's status as GET /jobs shows it; in a fake Redis (tests/unit/api/edge.py)."""

from __future__ import annotations

import asyncio

import pytest

from api.errors import QueueFull, ResultStoreUnavailable
from api.jobs.store import JobStore, fingerprint
from tests.unit.api.edge import FakeRedis, config

pytestmark = pytest.mark.unit

JOB = {"meta": {"model": "m"}, "content": "hi"}


def test_the_same_body_is_the_same_job_however_it_was_sent_and_whoever_ran_it() -> None:
    same = {**JOB, "stream": True, "accepted_at": 1.0, "notify": True, "tenant": "a", "weight": 2.0, "record": {},
            "key_id": "key_1"}  # fmt: skip
    assert fingerprint("llm.generate", JOB) == fingerprint("llm.generate", same)
    assert fingerprint("llm.generate", JOB) != fingerprint("llm.chat", JOB)
    assert fingerprint("llm.generate", JOB) != fingerprint("llm.generate", {**JOB, "content": "ho"})
    assert fingerprint("t", {"a": 1, "b": 2}) == fingerprint("t", {"b": 2, "a": 1})


def store_of(**settings: object) -> tuple[JobStore, FakeRedis]:
    redis = FakeRedis()
    return JobStore(config(**settings), redis), redis  # type: ignore[arg-type]


def test_a_claim_is_new_then_the_same_then_refused_past_the_queues_bound() -> None:
    async def main() -> None:
        store, redis = store_of(max_queued_jobs=2)
        first = await store.claim("j1", "llm.generate", JOB, tenant="alpha", queue="q", priority=8)
        # Its queue and priority are kept with the claim (its band's count, GET /scaling?bands=true).
        assert {k: redis.hashes[store._config.keys.job("j1")][k] for k in (b"queue", b"priority")} == {
            b"queue": b"q",
            b"priority": b"8",
        }
        again = await store.claim("j1", "llm.generate", {**JOB, "stream": True})
        other = await store.claim("j1", "llm.generate", {**JOB, "content": "ho"})
        assert (first.new, again.new, again.same, other.same) == (True, False, True, False)
        await store.claim("j2", "llm.generate", JOB)
        with pytest.raises(QueueFull, match="2 jobs waiting to start, at most 2") as full:
            await store.claim("j3", "llm.generate", JOB)
        assert full.value.retry_after == 2

    asyncio.run(main())


def test_a_jobs_status_says_where_it_is_and_what_it_ended_with() -> None:
    async def main() -> None:
        store, redis = store_of()
        settings = config()
        assert await store.status("nothing") is None
        await store.claim("alpha~j1", "llm.generate", JOB, tenant="alpha")
        queued = await store.status("alpha~j1")
        assert (queued["status"], queued["tenant"], queued["queue_position"]) == ("queued", "alpha", 1)
        assert queued["accepted_at"].endswith("+00:00") and queued["result"] is None
        redis.start(settings, "alpha~j1")
        running = await store.status("alpha~j1")
        assert running["status"] == "running" and running["queue_position"] is None and running["started_at"]
        redis.finish(settings, "alpha~j1", "FAILURE", {"exc_type": "ModelServerRejected",
                                                       "exc_message": ["no such model", 404]})  # fmt: skip
        failed = await store.status("alpha~j1")
        assert failed["status"] == "failed" and failed["finished_at"]
        assert failed["error"] == {"type": "ModelServerRejected", "message": "no such model", "status_code": 404}
        # A job sent from Python without the API's claim: whose it is, its key says.
        redis.finish(settings, "beta~j9", result={"content": "x"})
        assert (await store.status("beta~j9"))["tenant"] == "beta"

    asyncio.run(main())


def test_when_redis_cannot_say_a_job_is_left_running_rather_than_cancelled_on_a_guess() -> None:
    async def main() -> None:
        store, redis = store_of()
        await store.claim("j1", "llm.generate", JOB, background=True)
        await store.mark_notified("j1")
        assert await store.background("j1") and await store.notified("j1") and await store.readers("j1") == 0
        redis.down = True
        assert await store.background("j1") and await store.readers("j1") == 1
        assert not await store.notified("j1") and not await store.release("j1")
        await store.mark_notified("j1")  # logged, not raised
        for call in (store.status("j1"), store.cancel("j1"), store.claim("j2", "t", JOB)):
            with pytest.raises(ResultStoreUnavailable):
                await call

    asyncio.run(main())
