"""Every Redis client bounded and following a Sentinel failover, and bookkeeping that waits out a Redis away."""

from __future__ import annotations

import pytest
import redis
import redis.asyncio as aioredis

from shared.config import Config
from shared.storage import redis_clients

pytestmark = pytest.mark.unit


def test_every_pool_is_bounded_and_waits_for_a_free_connection() -> None:
    config = Config(_env_file=None, redis_host="127.0.0.1", redis_port=6379)
    sync = redis_clients.sync_client(config)
    assert isinstance(sync.connection_pool, redis.BlockingConnectionPool)
    assert sync.connection_pool.max_connections == redis_clients.MAX_CONNECTIONS
    assert sync.connection_pool.timeout is None  # waits, never "Too many connections"
    readers = redis_clients.stream_reader_client(config)
    assert isinstance(readers.connection_pool, aioredis.BlockingConnectionPool)
    assert readers.connection_pool.max_connections == redis_clients.STREAM_READERS
    commands = redis_clients.api_client(config)
    assert commands.connection_pool.max_connections == redis_clients.API_COMMANDS


def test_patiently_makes_a_call_again_while_redis_is_away_then_gives_up() -> None:
    slept: list[float] = []
    calls = iter([redis.ConnectionError("Error 111"), redis.TimeoutError("timed out"), "answered"])

    def call() -> str:
        outcome = next(calls)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert redis_clients.patiently(call, 10, sleep=slept.append) == "answered" and len(slept) == 2

    def away() -> str:
        raise redis.ConnectionError("Error 111")

    with pytest.raises(redis.ConnectionError):
        redis_clients.patiently(away, 0.2, sleep=lambda _: None)
    with pytest.raises(redis.ResponseError):  # not Redis away: raised at once
        redis_clients.patiently(lambda: (_ for _ in ()).throw(redis.ResponseError("WRONGTYPE")), 10)


def test_sentinels_make_every_client_follow_the_master() -> None:
    sentinel = Config(
        _env_file=None,  # type: ignore[call-arg]
        rabbit_mq_host="r",
        redis_sentinels="s1,s2:26380",
        redis_sentinel_master="gateway",
        redis_db=2,
    )
    client = redis_clients.sync_client(sentinel)
    pool = client.connection_pool
    assert pool.service_name == "gateway" and pool.connection_kwargs["db"] == 2
    assert [s.connection_pool.connection_kwargs["port"] for s in pool.sentinel_manager.sentinels] == [26379, 26380]
    bounded = redis_clients.async_client(sentinel, max_connections=4)
    assert bounded.connection_pool.max_connections == 4 and bounded.connection_pool.service_name == "gateway"
