"""Clients of the result store: REDIS_HOST's server, or the master that REDIS_SENTINELS name.

Every Redis client of the API and the workers is made here, so each follows a
Sentinel failover the same way: a connection is made to the master the Sentinels
name at that moment, and one that fails (the old master died, or was demoted and
refuses writes) is made again to the new master on the next try.

With Sentinels, Redis replicates asynchronously: a write the master acknowledged
and then lost with its host is gone from the promoted replica. The writes that
must survive (a job's claim, its result) are followed by ``WAIT`` for
REDIS_REPLICA_ACKS replicas (`wait_for_replicas`); a master that dies before the replica
has them fails the write, and it is made again on the new master.

Every pool is bounded: a command waits for a free connection rather than opening
one more (a burst of requests, or of a tenant's stream readers, cannot multiply the
connections Redis holds), or failing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.asyncio.sentinel import SentinelConnectionPool as AsyncSentinelPool
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.sentinel import Sentinel, SentinelConnectionPool

from shared.config import Config

log = logging.getLogger(__name__)

WAIT_MS = 1000  # how long a write waits for its replicas before it counts anyway
MAX_CONNECTIONS = 64  # a pool's connections, unless its maker says
API_COMMANDS = 32  # the API's command pool
STREAM_READERS = 64  # the API's pool of blocking reads of answers' streams


# What a Redis that is away (restarting, failing over) raises.
UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)
PATIENT_DELAYS = (0.05, 0.1, 0.25, 0.5, 1.0, 1.0, 2.0)

T = TypeVar("T")


def patiently(call: Callable[[], T], seconds: float, sleep: Callable[[float], None] = time.sleep) -> T:
    """`call()`, made again while Redis cannot be reached, for up to `seconds` (a blocking
    client's bookkeeping waits out a restart); then its last error is raised."""
    give_up_at = time.monotonic() + seconds
    for attempt in range(1_000_000):
        try:
            return call()
        except UNREACHABLE:
            delay = PATIENT_DELAYS[min(attempt, len(PATIENT_DELAYS) - 1)]
            if time.monotonic() + delay > give_up_at:
                raise
            sleep(delay)
    raise AssertionError("unreachable")


class _BlockingSentinelPool(AsyncSentinelPool, aioredis.BlockingConnectionPool):
    """The master's connections, a bounded number: a command waits for a free one."""


class _SyncBlockingSentinelPool(SentinelConnectionPool, redis.BlockingConnectionPool):
    """The same, for blocking clients."""


def _password(config: Config) -> str | None:
    return config.redis_password.get_secret_value() if config.redis_password else None


def sentinel_kwargs(config: Config) -> dict[str, Any]:
    """How the Sentinels themselves are reached."""
    kwargs: dict[str, Any] = {"socket_connect_timeout": config.redis_connect_timeout,
                              "socket_timeout": config.redis_connect_timeout}  # fmt: skip
    if config.redis_sentinel_password:
        kwargs["password"] = config.redis_sentinel_password.get_secret_value()
    return kwargs


def sync_client(config: Config, max_connections: int = MAX_CONNECTIONS, **options: Any) -> redis.Redis:
    """A blocking client of the result store's master (workers, threads, commands): a
    command waits for one of `max_connections` connections rather than failing."""
    options = {"timeout": None, **options}  # waits for a free connection as long as it takes
    if not config.sentinels:
        pool = redis.BlockingConnectionPool.from_url(config.redis_url, max_connections=max_connections, **options)
        return redis.Redis(connection_pool=pool)
    sentinel = Sentinel(config.sentinels, sentinel_kwargs=sentinel_kwargs(config))
    options |= {"connection_pool_class": _SyncBlockingSentinelPool, "max_connections": max_connections}
    return sentinel.master_for(config.redis_sentinel_master, db=config.redis_db, password=_password(config), **options)


def async_client(config: Config, max_connections: int = MAX_CONNECTIONS, **options: Any) -> aioredis.Redis:
    """An asyncio client of the result store's master: a command waits for one of
    `max_connections` connections rather than failing."""
    options = {"timeout": None, **options}
    if not config.sentinels:
        pool = aioredis.BlockingConnectionPool.from_url(config.redis_url, max_connections=max_connections, **options)
        return aioredis.Redis(connection_pool=pool)
    sentinel = AsyncSentinel(config.sentinels, sentinel_kwargs=sentinel_kwargs(config))
    options |= {"connection_pool_class": _BlockingSentinelPool, "max_connections": max_connections}
    return sentinel.master_for(config.redis_sentinel_master, db=config.redis_db, password=_password(config), **options)


async def master_address(config: Config) -> tuple[str, int]:
    """Where the result store's master is now: REDIS_HOST's, or the one the Sentinels name."""
    if not config.sentinels:
        return config.redis_host, config.redis_port
    sentinel = AsyncSentinel(config.sentinels, sentinel_kwargs=sentinel_kwargs(config))
    try:
        host, port = await sentinel.discover_master(config.redis_sentinel_master)
    finally:
        for client in sentinel.sentinels:
            await client.aclose()
    return str(host), int(port)


def wait_for_replicas(pipe: Any, config: Config) -> bool:
    """Append ``WAIT`` to `pipe`, after a write that must outlive its master: it answers once
    REDIS_REPLICA_ACKS replicas hold the write (or WAIT_MS passed). A pipeline, as WAIT
    counts the writes of its own connection. False (nothing appended) without Sentinels."""
    if not config.sentinels or not config.redis_replica_acks:
        return False
    pipe.execute_command("WAIT", config.redis_replica_acks, WAIT_MS)
    return True


def check_replicas(acks: Any, config: Config) -> None:
    """Say so when fewer replicas than REDIS_REPLICA_ACKS hold a write (`wait_for_replicas`'s answer)."""
    if int(acks) < config.redis_replica_acks:
        log.warning("a write is on %s of %s replicas: a failover now may lose it", acks, config.redis_replica_acks)


def result_backend_url(config: Config) -> str:
    """Celery's result-backend URL of the result store (without the backend's class)."""
    if not config.sentinels:
        return config.redis_url
    password = config.redis_password.get_secret_value() if config.redis_password else ""
    auth = f":{quote(password, safe='')}@" if password else ""
    return ";".join(f"sentinel://{auth}{host}:{port}/{config.redis_db}" for host, port in config.sentinels)


def api_client(config: Config) -> aioredis.Redis:
    """The API's Redis client for commands (the pub/sub connection is the waiter's own)."""
    # Commands queue for a connection rather than fail when thousands of requests
    # arrive at once; a handful of connections carries them.
    return async_client(
        config,
        max_connections=API_COMMANDS,
        timeout=config.redis_connect_timeout,
        socket_connect_timeout=config.redis_connect_timeout,
        socket_timeout=config.redis_connect_timeout,
        # After a Redis restart the pooled connections are dead: a command that meets
        # one is sent again on a new connection rather than failing.
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )


def stream_reader_client(config: Config) -> aioredis.Redis:
    """The API's client for answers' streams: blocking reads (`XREAD BLOCK`), on a pool
    of their own so they never starve the other commands, of STREAM_READERS connections:
    readers beyond them wait their turn (each read blocks at most STREAM_POLL_MS), so
    however many streams are read, Redis holds as many connections."""
    return async_client(config, max_connections=STREAM_READERS, socket_connect_timeout=config.redis_connect_timeout)
