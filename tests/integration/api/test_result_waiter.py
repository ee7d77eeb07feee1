"""The shared pub/sub waiter against the real Redis: no result is missed, even across reconnects."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis.asyncio as aioredis

from api.errors import ResultStoreUnavailable
from api.jobs.result_waiter import ResultWaiter
from api.jobs.store import JobStore
from shared.config import Config
from shared.contract import STORE_ONCE
from shared.storage.redis_clients import api_client
from testing.fake_model_server import free_port

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def success(job_id: str, content: str) -> str:
    return json.dumps({"status": "SUCCESS", "result": {"content": content}, "task_id": job_id})


@pytest.fixture
async def store(config: Config) -> AsyncIterator[aioredis.Redis]:
    """The API's own Redis client, as api/services.py makes it."""
    client = api_client(config)
    yield client
    await client.aclose(close_connection_pool=True)


@pytest.fixture
def config(redis_address: tuple[str, int]) -> Config:
    return Config(
        _env_file=None,
        redis_host=redis_address[0],
        redis_port=redis_address[1],
        redis_prefix=f"waiter-{uuid.uuid4().hex[:8]}",
    )  # type: ignore[call-arg]


async def publish(store: aioredis.Redis, config: Config, job_id: str, meta: str) -> None:
    """As Celery's Redis backend does: store, then publish on the key's channel."""
    key = config.keys.result(job_id)
    async with store.pipeline() as pipe:
        await pipe.set(key, meta, ex=60).publish(key, meta).execute()


async def test_result_published_after_subscribing_is_received(config: Config, store: aioredis.Redis) -> None:
    waiter = ResultWaiter(config, store)
    await waiter.start()
    try:
        async with watch(waiter, "a") as result:
            assert not result.done()
            await publish(store, config, "a", success("a", "hello"))
            meta = await asyncio.wait_for(result, 5)
        assert meta["result"]["content"] == "hello"
    finally:
        await waiter.close()


async def test_result_stored_before_watching_is_read(config: Config, store: aioredis.Redis) -> None:
    await publish(store, config, "b", success("b", "early"))
    waiter = ResultWaiter(config, store)
    await waiter.start()
    try:
        async with watch(waiter, "b") as result:
            assert result.done() and result.result()["result"]["content"] == "early"
    finally:
        await waiter.close()


async def test_progress_states_do_not_end_the_wait(config: Config, store: aioredis.Redis) -> None:
    waiter = ResultWaiter(config, store)
    await waiter.start()
    try:
        async with watch(waiter, "c") as result:
            await publish(store, config, "c", json.dumps({"status": "STARTED", "result": {}}))
            await asyncio.sleep(0.1)
            assert not result.done()
            await publish(store, config, "c", success("c", "done"))
            assert (await asyncio.wait_for(result, 5))["result"]["content"] == "done"
    finally:
        await waiter.close()


async def test_many_waiters_of_many_jobs_each_get_their_own(config: Config, store: aioredis.Redis) -> None:
    waiter = ResultWaiter(config, store)
    await waiter.start()

    async def wait_one(job_id: str) -> str:
        async with watch(waiter, job_id) as result:
            return (await asyncio.wait_for(result, 10))["result"]["content"]

    try:
        waits = [asyncio.create_task(wait_one(f"job-{i % 500}")) for i in range(1000)]
        await asyncio.sleep(0.5)
        for i in range(500):
            await publish(store, config, f"job-{i}", success(str(i), f"answer {i}"))
        answers = await asyncio.gather(*waits)
        assert answers == [f"answer {i % 500}" for i in range(1000)]
    finally:
        await waiter.close()


async def test_quiet_connection_stays_up_and_a_killed_one_is_replaced(config: Config, store: aioredis.Redis) -> None:
    waiter = ResultWaiter(config, store, heartbeat=0.2)
    await waiter.start()
    try:
        async with watch(waiter, "d") as result:
            await asyncio.sleep(1.0)  # several heartbeats with nothing published
            assert waiter.connects == 1
            clients = await store.client_list(_type="pubsub")
            (mine,) = [c["id"] for c in clients if c["name"] == waiter.client_name]
            await store.client_kill_filter(_id=mine)
            # Published while the waiter has no subscription: found by the re-read.
            await publish(store, config, "d", success("d", "after the outage"))
            meta = await asyncio.wait_for(result, 10)
        assert meta["result"]["content"] == "after the outage"
        assert waiter.connects >= 2
    finally:
        await waiter.close()


async def store_as_the_worker_does(store: aioredis.Redis, config: Config, job_id: str, meta: str) -> None:
    """The worker's result store script: the job's channel, and its claim's reply_to."""
    keys = [config.keys.result(job_id), config.keys.job(job_id)]
    await store.eval(STORE_ONCE, 2, *keys, meta, 60)


async def test_a_job_queued_by_this_process_needs_no_subscription_of_its_own(
    config: Config, store: aioredis.Redis
) -> None:
    waiter = ResultWaiter(config, store, heartbeat=0.2)
    jobs = JobStore(config, store)
    await waiter.start()
    try:
        async with waiter.expect("own-1") as first, waiter.expect("own-2") as second:
            assert (await jobs.claim("own-1", "llm.generate", {"content": "x"}, waiter.reply_channel)).new
            assert (await jobs.claim("own-2", "llm.generate", {"content": "y"}, waiter.reply_channel)).new
            channels = [config.keys.result("own-1"), config.keys.result("own-2"), waiter.reply_channel]
            subscribers = dict(await store.pubsub_numsub(*channels))
            assert [subscribers[channel.encode()] for channel in channels] == [0, 0, 1]
            await store_as_the_worker_does(store, config, "own-1", success("own-1", "one"))
            assert (await asyncio.wait_for(first, 5))["result"]["content"] == "one"
            assert not second.done()
            # Lost connection: a result published meanwhile is read from its key.
            clients = await store.client_list(_type="pubsub")
            (mine,) = [c["id"] for c in clients if c["name"] == waiter.client_name]
            await store.client_kill_filter(_id=mine)
            await store_as_the_worker_does(store, config, "own-2", success("own-2", "two"))
            assert (await asyncio.wait_for(second, 10))["result"]["content"] == "two"
            assert waiter.connects >= 2
    finally:
        await waiter.close()


async def test_a_result_stored_but_never_published_is_read_once_the_job_is_overdue(
    config: Config, store: aioredis.Redis
) -> None:
    waiter = ResultWaiter(config, store, reread=0.5)
    await waiter.start()
    try:
        async with waiter.expect("quiet-1") as first, waiter.expect("quiet-2") as second:
            # Stored as by a worker whose publish went nowhere (the claim lost with Redis's data).
            await store.set(config.keys.result("quiet-1"), success("quiet-1", "found"), ex=60)
            await asyncio.sleep(0.1)
            assert not first.done()
            assert (await asyncio.wait_for(first, 5))["result"]["content"] == "found"
            assert not second.done() and waiter.rereads_resolved == 1
    finally:
        await waiter.close()


async def test_unreachable_redis_is_result_store_unavailable() -> None:
    config = Config(_env_file=None, redis_host="127.0.0.1", redis_port=free_port(), redis_connect_timeout=0.5)  # type: ignore[call-arg]
    store = api_client(config)
    waiter = ResultWaiter(config, store)
    await waiter.start()
    try:
        with pytest.raises(ResultStoreUnavailable, match="result store"):
            async with watch(waiter, "e"):
                pass
    finally:
        await waiter.close()
        await store.aclose(close_connection_pool=True)


@asynccontextmanager
async def watch(waiter: ResultWaiter, job_id: str) -> AsyncIterator[asyncio.Future[dict[str, Any]]]:
    """Await any job's result, as a request for a job queued before does (api/jobs/runner.py)."""
    async with waiter.expect(job_id) as result:
        await waiter.follow(job_id)
        yield result
