"""Awaiting results through one pub/sub connection (api/jobs/result_waiter.py): a result
published on this process's channel or the job's reaches its waiters, one stored before
the subscription is read, and one published while the connection was down is read from
its key once it is back. The connection is a fake Redis's (tests/unit/api/edge.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from unittest import mock

import pytest

from api.errors import ResultStoreUnavailable
from api.jobs import result_waiter
from api.jobs.result_waiter import ResultWaiter
from shared.config import Config
from tests.unit.api.edge import FakeRedis, config

pytestmark = pytest.mark.unit

SETTINGS = config(redis_connect_timeout=1)
DONE = {"status": "SUCCESS", "result": {"content": "ok"}}


@asynccontextmanager
async def waiting(redis: FakeRedis, settings: Config = SETTINGS, reread: float = 10.0) -> AsyncIterator[ResultWaiter]:
    with mock.patch.object(result_waiter, "Connection", redis.connection):
        waiter = ResultWaiter(settings, redis, reread=reread)  # type: ignore[arg-type]
        await waiter.start()
        try:
            yield waiter
        finally:
            await waiter.close()


def publish(redis: FakeRedis, channel: str, meta: dict[str, object]) -> None:
    redis.publish_now(channel, json.dumps(meta).encode())


def test_a_result_on_this_processs_channel_reaches_the_request_awaiting_its_job() -> None:
    async def main() -> None:
        redis = FakeRedis()
        async with waiting(redis) as waiter, waiter.expect("j1") as result:
            publish(redis, waiter.reply_channel, {**DONE, "task_id": "other"})
            publish(redis, waiter.reply_channel, {"status": "STARTED", "task_id": "j1"})  # not an end
            publish(redis, waiter.reply_channel, {**DONE, "task_id": "j1"})
            assert (await asyncio.wait_for(result, 2))["result"] == {"content": "ok"}
            assert redis.connections[0].sent == [("SUBSCRIBE", waiter.reply_channel)]  # no channel per job

    asyncio.run(main())


def test_a_followed_job_stored_before_the_subscription_is_read_and_one_after_is_heard() -> None:
    async def main() -> None:
        redis = FakeRedis()
        async with waiting(redis) as waiter:
            redis.strings[SETTINGS.keys.result("early")] = json.dumps(DONE).encode()
            async with waiter.expect("early") as result:
                await waiter.follow("early")
                assert result.done()
            async with waiter.expect("late") as result:
                await waiter.follow("late")
                assert not result.done()
                publish(redis, SETTINGS.keys.result("late"), DONE)
                await asyncio.wait_for(result, 2)
            # Nobody awaits it any more: its channel is left.
            assert ("UNSUBSCRIBE", SETTINGS.keys.result("late")) in redis.connections[0].sent

    asyncio.run(main())


def test_a_result_published_while_the_connection_was_down_is_read_from_its_key() -> None:
    async def main() -> None:
        redis = FakeRedis()
        async with waiting(redis) as waiter:
            async with waiter.expect("mine") as mine, waiter.expect("followed") as followed:
                await waiter.follow("followed")
                back = asyncio.create_task(waiter.reconnected())
                redis.drop_connections()  # Redis restarts; meanwhile both jobs end
                redis.strings[SETTINGS.keys.result("mine")] = json.dumps(DONE).encode()
                redis.strings[SETTINGS.keys.result("followed")] = json.dumps(DONE).encode()
                await asyncio.wait_for(asyncio.gather(mine, followed, back), 5)
            assert waiter.connects == 2
            assert SETTINGS.keys.result("followed") in redis.connections[-1].sent[0]  # subscribed again

    asyncio.run(main())


def test_results_stored_but_never_heard_of_are_read_again_when_overdue() -> None:
    async def main() -> None:
        redis = FakeRedis()
        async with waiting(redis, reread=0.0) as waiter, waiter.expect("lost") as result:
            redis.strings[SETTINGS.keys.result("lost")] = b"not json"
            assert await waiter.reread_overdue() == 0  # unreadable: ignored, not raised
            redis.strings[SETTINGS.keys.result("lost")] = json.dumps(DONE).encode()
            assert await waiter.reread_overdue() == 1 and result.done() and waiter.rereads_resolved == 1

    asyncio.run(main())


def test_a_wait_for_a_result_store_that_does_not_answer_is_a_503() -> None:
    async def main() -> None:
        redis = FakeRedis()
        redis.down = True
        async with waiting(redis, config(redis_connect_timeout=0.05)) as waiter:
            with pytest.raises(ResultStoreUnavailable):
                async with waiter.expect("j1"):
                    pass

    asyncio.run(main())
