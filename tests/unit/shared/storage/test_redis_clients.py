"""Every Redis client bounded and following a Sentinel failover, and bookkeeping that waits out a Redis away."""

from __future__ import annotations

import pytest
import redis
import redis.asyncio as aioredis

from shared.config import Config
from shared.storage import redis_clients
from testing.scripted_redis import ScriptedRedis

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


def test_a_write_that_must_outlive_its_master_waits_for_replicas_only_with_sentinels(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sentinels = Config(_env_file=None, rabbit_mq_host="r", redis_sentinels="s1", redis_replica_acks=2)  # type: ignore[call-arg]
    pipe = ScriptedRedis().pipeline()
    assert redis_clients.wait_for_replicas(pipe, sentinels)
    assert [(call.name, call.args) for call in pipe.queued] == [("execute_command", ("WAIT", 2, redis_clients.WAIT_MS))]
    alone = ScriptedRedis().pipeline()
    assert not redis_clients.wait_for_replicas(alone, Config(_env_file=None)) and alone.queued == []  # type: ignore[call-arg]
    redis_clients.check_replicas(2, sentinels)
    assert caplog.text == ""
    redis_clients.check_replicas(1, sentinels)
    assert "a write is on 1 of 2 replicas" in caplog.text


def test_the_result_backends_url_quotes_the_password_for_each_sentinel() -> None:
    plain = Config(_env_file=None, redis_host="cache", redis_password="p@ss")  # type: ignore[call-arg]
    assert redis_clients.result_backend_url(plain) == plain.redis_url
    sentinels = Config(_env_file=None, rabbit_mq_host="r", redis_sentinels="s1,s2:26380", redis_password="p/@ss")  # type: ignore[call-arg]
    assert redis_clients.result_backend_url(sentinels) == (
        "sentinel://:p%2F%40ss@s1:26379/0;sentinel://:p%2F%40ss@s2:26380/0"
    )
    assert redis_clients.sentinel_kwargs(sentinels) == {"socket_connect_timeout": 3.0, "socket_timeout": 3.0}
