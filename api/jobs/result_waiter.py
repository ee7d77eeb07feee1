"""Awaiting job results on the event loop through one shared Redis pub/sub connection.

The worker's result backend stores a job's result under its key and publishes it on
a channel of the same name, and on the channel of the API process that queued the
job (its claim's `reply_to`). Each API process listens on its own channel from the
start, so a job it queues itself costs no subscription (`expect`). A request for a
job queued before, maybe by another process, `follow`s it: subscribes to the job's
channel, waits for Redis to confirm, and only then reads the key once: a result that
landed before the subscription is read, one that lands after it is received.

Pub/sub delivers at most once: a result published while this process's connection
was down is read from its key when the connection is made again, and every job
awaited longer than `REREAD_INTERVAL` has its key read again every as long, so a
result whose message went nowhere (a Redis that lost the job's claim and its
reply_to with its data, a worker of an older release) still reaches its waiter.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import Connection
from redis.exceptions import RedisError

from api.errors import ResultStoreUnavailable
from api.stopping import stop
from shared.config import Config
from shared.contract import FINISHED
from shared.storage import redis_clients

log = logging.getLogger(__name__)

RECONNECT_DELAYS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)
# A silent connection is tested with a PING this often; no answer in as long again
# means it is dead (a half-open TCP connection never says so by itself).
HEARTBEAT_INTERVAL = 5.0
# Results of jobs awaited longer than this are read from their keys this often.
REREAD_INTERVAL = 10.0
REREAD_BATCH = 500


class _Watch:
    """One job being awaited, shared by every request awaiting it."""

    __slots__ = ("channel", "following", "result", "since", "subscribed", "users")

    def __init__(self, channel: str) -> None:
        loop = asyncio.get_running_loop()
        self.channel = channel
        self.since = loop.time()
        self.result: asyncio.Future[dict[str, Any]] = loop.create_future()
        self.subscribed: asyncio.Future[None] = loop.create_future()
        self.following = False  # subscribed to the job's own channel
        self.users = 0

    def resolve(self, meta: dict[str, Any]) -> None:
        if not self.result.done() and meta.get("status") in FINISHED:
            self.result.set_result(meta)


class ResultWaiter:
    """Hands out job results to the requests awaiting them."""

    def __init__(
        self,
        config: Config,
        store: aioredis.Redis,
        heartbeat: float = HEARTBEAT_INTERVAL,
        reread: float = REREAD_INTERVAL,
    ) -> None:
        self._config = config
        self._store = store  # for reading stored results; owned by the caller
        self._heartbeat_interval = heartbeat
        self._reread_interval = reread
        self.rereads_resolved = 0  # results found by the periodic re-read, not received
        self.connects = 0  # connections made so far (1 unless Redis was lost)
        self.client_name = f"{config.redis_prefix}-result-waiter"
        # Results of the jobs this process queued are published here (the claim records
        # it: contract.CLAIM, run by api/jobs/store.py).
        self.reply_channel = config.keys.replies(uuid.uuid4().hex)
        self._replies = asyncio.Event()  # set while the reply channel's subscription holds
        self._watches: dict[str, _Watch] = {}
        # SUBSCRIBE commands sent per channel and not yet confirmed: a watch is
        # subscribed only once every SUBSCRIBE sent for its channel is confirmed.
        self._unconfirmed: defaultdict[str, int] = defaultdict(int)
        self._connection: Connection | None = None
        self._connected = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._pong = asyncio.Event()
        self._rereads: set[asyncio.Task[None]] = set()
        self._reconnected = asyncio.Event()  # set (and replaced) each time the connection is made again

    async def reconnected(self) -> None:
        """Return when the connection to Redis is next made again, after a loss (the
        server came back: what it had not delivered may be lost, api/jobs/recovery.py)."""
        await self._reconnected.wait()

    async def start(self) -> None:
        """Start the pub/sub reader (it keeps reconnecting while Redis is down)."""
        self._reader = asyncio.create_task(self._read_forever(), name="result-waiter")
        self._heartbeat = asyncio.create_task(self._beat_forever(), name="result-waiter-heartbeat")
        self._sweeper = asyncio.create_task(self._reread_forever(), name="result-waiter-reread")

    async def close(self) -> None:
        """Stop the reader and close connections."""
        await stop((self._reader, self._heartbeat, self._sweeper))
        if self._connection:
            await self._connection.disconnect()

    @asynccontextmanager
    async def expect(self, job_id: str) -> AsyncIterator[asyncio.Future[dict[str, Any]]]:
        """Await the result of a job; yields a future of its stored result meta.

        Enters once this process's reply channel is subscribed: a job queued inside
        the block with `reply_channel` as its claim's `reply_to` has its result
        delivered. A job queued otherwise needs `follow` too.
        """
        channel = self._config.keys.result(job_id)
        watch = self._watches.get(channel)
        if watch is None:
            watch = self._watches[channel] = _Watch(channel)
        watch.users += 1
        try:
            await self._replies_ready()
            yield watch.result
        finally:
            watch.users -= 1
            if watch.users == 0:
                del self._watches[channel]
                if watch.following:
                    await self._unsubscribe(channel)

    async def follow(self, job_id: str) -> None:
        """For a job expected (inside `expect`) that another request queued: subscribe to
        its channel, then read its stored result (it may have run already)."""
        watch = self._watches[self._config.keys.result(job_id)]
        watch.following = True
        if not watch.subscribed.done():
            await self._subscribe(watch)
        if not watch.result.done():
            await self._read_stored(watch)

    async def _replies_ready(self) -> None:
        if self._replies.is_set():
            return
        try:
            await asyncio.wait_for(self._replies.wait(), self._config.redis_connect_timeout)
        except TimeoutError:
            log.warning("no subscription to %s: the result store is not answering", self.reply_channel)
            raise ResultStoreUnavailable("result store (Redis) unavailable") from None

    async def _subscribe(self, watch: _Watch) -> None:
        timeout = self._config.redis_connect_timeout
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
            if not watch.subscribed.done():
                # A second SUBSCRIBE to a channel is harmless: Redis confirms each.
                await self._send("SUBSCRIBE", watch.channel)
            await asyncio.wait_for(asyncio.shield(watch.subscribed), timeout)
        except (TimeoutError, RedisError, OSError) as exc:
            log.warning("subscribing to %s failed: %r", watch.channel, exc)
            raise ResultStoreUnavailable("result store (Redis) unavailable") from None

    async def _read_stored(self, watch: _Watch) -> None:
        try:
            raw = await self._store.get(watch.channel)
        except (RedisError, OSError) as exc:
            log.warning("reading %s failed: %r", watch.channel, exc)
            raise ResultStoreUnavailable("result store (Redis) unavailable") from None
        if raw is not None:
            watch.resolve(_parse(raw))

    async def _send(self, *command: str) -> None:
        connection = self._connection
        if connection is None or not self._connected.is_set():
            raise ConnectionError("not connected")
        if command[0] == "SUBSCRIBE":
            for channel in command[1:]:
                self._unconfirmed[channel] += 1
        await connection.send_command(*command, check_health=False)

    async def _unsubscribe(self, channel: str) -> None:
        if self._connected.is_set():
            # On failure, the next connection is made without the channel anyway.
            with contextlib.suppress(RedisError, OSError):
                await self._send("UNSUBSCRIBE", channel)

    async def _read_forever(self) -> None:
        failures = 0
        while True:
            try:
                await self._connect()
                failures = 0
                await self._dispatch()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if failures == 0:
                    log.warning("result store connection lost: %s; reconnecting", exc)
                self._connected.clear()
                self._replies.clear()
                delay = RECONNECT_DELAYS[min(failures, len(RECONNECT_DELAYS) - 1)]
                failures += 1
                await asyncio.sleep(delay)

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_interval)
            connection = self._connection
            if connection is None or not self._connected.is_set():
                continue
            self._pong.clear()
            try:
                await self._send("PING")
                # Not asyncio.wait_for: on Python 3.11 it swallows a cancellation that comes
                # as the pong does, and this loop would outlive the waiter's close.
                async with asyncio.timeout(self._heartbeat_interval):
                    await self._pong.wait()
            except (TimeoutError, RedisError, OSError):
                log.warning("result store did not answer a ping; reconnecting")
                # Closing the socket makes the reader's pending read fail, and it reconnects.
                await connection.disconnect()

    async def _reread_forever(self) -> None:
        while True:
            await asyncio.sleep(self._reread_interval)
            try:
                await self.reread_overdue()
            except (RedisError, OSError) as exc:
                log.debug("could not re-read awaited results: %s", exc)

    async def reread_overdue(self) -> int:
        """Read the stored results of the jobs awaited longer than the re-read interval;
        resolve those found. Returns how many were found."""
        horizon = asyncio.get_running_loop().time() - self._reread_interval
        overdue = [w for w in self._watches.values() if w.since <= horizon and not w.result.done()]
        found = 0
        for start in range(0, len(overdue), REREAD_BATCH):
            batch = overdue[start : start + REREAD_BATCH]
            values = await self._store.mget([watch.channel for watch in batch])
            for watch, raw in zip(batch, values, strict=True):
                if raw is not None and not watch.result.done():
                    watch.resolve(_parse(raw))
                    found += watch.result.done()
        if found:
            self.rereads_resolved += found
            log.warning("%d awaited result(s) were stored but never received: read from their keys", found)
        return found

    async def _connect(self) -> None:
        if self._connection is not None:
            await self._connection.disconnect()
        config = self._config
        # The master now (with Sentinels, the one they name: after a failover, the new one).
        host, port = await redis_clients.master_address(config)
        self._connection = Connection(
            host=host,
            port=port,
            db=config.redis_db,
            password=config.redis_password.get_secret_value() if config.redis_password else None,
            socket_connect_timeout=config.redis_connect_timeout,
            socket_timeout=None,  # waits for messages for as long as it takes
            client_name=self.client_name,  # shown by CLIENT LIST
            protocol=2,
        )
        self._replies.clear()
        await self._connection.connect()
        self.connects += 1
        self._unconfirmed.clear()
        self._connected.set()
        # This process's reply channel; and the jobs followed from before a lost
        # connection: subscribe again, then re-read every awaited job's key, since a
        # result may have been published while no one listened.
        channels = [self.reply_channel, *(channel for channel, watch in self._watches.items() if watch.following)]
        await self._send("SUBSCRIBE", *channels)
        if self._watches:
            log.info("result store reconnected; re-watching %d jobs", len(self._watches))
        if self.connects > 1:
            reconnected, self._reconnected = self._reconnected, asyncio.Event()
            reconnected.set()

    async def _dispatch(self) -> None:
        assert self._connection is not None
        while True:
            reply = await self._connection.read_response()
            if reply == b"PONG" or (isinstance(reply, list) and reply[:1] == [b"pong"]):
                self._pong.set()
                continue
            if not isinstance(reply, list) or len(reply) < 3:
                continue
            kind, channel = reply[0], reply[1].decode()
            if kind == b"message":
                meta = _parse(reply[2])
                if channel == self.reply_channel:
                    task_id = meta.get("task_id")
                    channel = self._config.keys.result(task_id) if isinstance(task_id, str) else ""
                watch = self._watches.get(channel)
                if watch is not None:
                    watch.resolve(meta)
            elif kind == b"subscribe" and channel == self.reply_channel:
                self._unconfirmed.pop(channel, None)
                self._replies.set()
                if self.connects > 1:
                    # Results published while the connection was down are only in their keys.
                    for watch in list(self._watches.values()):
                        if not watch.following:
                            self._reread_later(watch)
            elif kind == b"subscribe":
                self._unconfirmed[channel] -= 1
                watch = self._watches.get(channel)
                if self._unconfirmed[channel] <= 0:
                    del self._unconfirmed[channel]
                    if watch is not None:
                        self._confirmed(watch)

    def _confirmed(self, watch: _Watch) -> None:
        if not watch.subscribed.done():
            watch.subscribed.set_result(None)
            return
        # Subscribed again after a reconnect: read what may have landed meanwhile.
        self._reread_later(watch)

    def _reread_later(self, watch: _Watch) -> None:
        task = asyncio.create_task(self._reread(watch))
        self._rereads.add(task)
        task.add_done_callback(self._rereads.discard)

    async def _reread(self, watch: _Watch) -> None:
        # Until it is read: a result published while no one listened is only in its key.
        for attempt in itertools.count():
            if watch.result.done() or self._watches.get(watch.channel) is not watch:
                return
            try:
                await self._read_stored(watch)
                return
            except ResultStoreUnavailable:
                await asyncio.sleep(RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)])


def _parse(raw: bytes) -> dict[str, Any]:
    try:
        meta = json.loads(raw)
    except ValueError:
        log.warning("ignoring a stored result that is not JSON")
        return {}
    return meta if isinstance(meta, dict) else {}
