"""This API process's projects and keys, kept as the control plane's database has them,
without a query per request.

The guard holds them in memory (shared/tenants.py `Directory`, read whole with the
database's version). They are read again:
- when a change is announced on Redis (the contract's ``control-changed`` channel): the
  process that made the change publishes the new version once it is committed, and
  every process reloads at once (a key made on one works on the others, a key deleted
  stops working on them, within about the time of one reload);
- when this process made the change itself (`changed`), before its answer is sent;
- every CONTROL_POLL_SECONDS, if the database's version differs from the one held: a
  notice lost (Redis down, a reconnection) is caught within that time.

If the database cannot be read, the process goes on with what it holds (the keys that
worked go on working) and reads again at the next notice or poll; `database_up` says
which, for /metrics. Expiring keys need no reload: each key's expiry is checked as it
is presented.

Every call to the database (these reads, and the admin endpoints' through `call`) runs
on threads of the control plane's own and is awaited CALL_SECONDS at most. A database
that hangs rather than refuses (a network that drops its packets, a server that stopped
answering) then holds none of the threads the rest of the process runs its blocking
calls on (files, the broker's counts), and an admin call is told it is unavailable in
bounded time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeout

from api.tenancy.guard import Guard
from shared.config import Config
from shared.control.database import migrate, shown
from shared.control.store import ControlStore

log = logging.getLogger(__name__)

# Seconds between two tries to subscribe to the change notices while Redis is away.
RESUBSCRIBE_SECONDS = 1.0
# Seconds a notice is waited for at once: the listener sees its connection close within it.
LISTEN_SECONDS = 1.0
# The longest an admin's answer waits for its change's notice to be published: with
# Redis away, the other processes read the change at their next poll instead.
PUBLISH_SECONDS = 1.0
# The longest a call to the database is awaited (its connection's, its queue's for a
# thread, its work's): past it the caller is answered that the database is unavailable,
# though the call may still end (a change may then be committed; the next poll reads it).
CALL_SECONDS = 10.0
# The control plane's own threads: as many as its engine's connections (shared/control/
# database.py: a pool of 2, and 4 more), so that no call waits for a thread while a
# connection is free.
DATABASE_THREADS = 6

T = TypeVar("T")


class Unanswered(SQLAlchemyTimeout):
    """The database did not answer a call within CALL_SECONDS: as unavailable as one that
    refuses (an SQLAlchemyError, as the callers that handle that handle this)."""


class ControlSync:
    """Keeps the guard's projects and keys those of the control plane's database."""

    def __init__(
        self,
        config: Config,
        store: ControlStore,
        guard: Guard,
        redis: aioredis.Redis,
        call_seconds: float = CALL_SECONDS,
    ) -> None:
        self._config = config
        self._store = store
        self._guard = guard
        self._redis = redis
        self._call_seconds = call_seconds
        self._threads = ThreadPoolExecutor(DATABASE_THREADS, thread_name_prefix="control-db")
        self._stale = asyncio.Event()
        self._loading = asyncio.Lock()
        self._failing = False  # the last read of the database failed (said once, not at every poll)

    @property
    def database_up(self) -> bool:
        """Whether the database answered this process's last read of it (its last poll):
        /metrics shows it (``llm_api_part_up{part="database"}``), /ready does not, as no
        request waits for it."""
        return not self._failing

    @property
    def version(self) -> int:
        """The version of the projects and keys held now."""
        return self._guard.tenants.runtime.version

    async def call(self, work: Callable[..., T], *args: Any, bounded: bool = True) -> T:
        """`work(*args)` (a call of the store) on the control plane's threads, awaited
        CALL_SECONDS at most (`bounded`; else as long as it takes); `Unanswered` past it."""
        running = asyncio.get_running_loop().run_in_executor(self._threads, partial(work, *args))
        try:
            async with asyncio.timeout(self._call_seconds if bounded else None):
                return await running
        except TimeoutError:
            raise Unanswered(f"the database did not answer within {self._call_seconds:g}s") from None

    def close(self) -> None:
        """Let the control plane's threads go as their calls end (one still waiting on a
        database that hangs ends as its connection's keepalives give up)."""
        self._threads.shutdown(wait=False, cancel_futures=True)

    async def start(self) -> None:
        """Bring the database's schema to its head and read what it holds, before the
        first request: a database that cannot be reached stops the API's start."""
        try:
            # Not bounded: another process starting may hold the migrations' lock a while.
            await self.call(migrate, self._store.engine, bounded=False)
            await self.reload()
        except SQLAlchemyError as exc:
            raise RuntimeError(
                f"control plane database {shown(self._config.control_database)} unavailable: {exc}"
            ) from None
        runtime = self._guard.tenants.runtime
        log.info(
            "control plane at version %d: %d projects, %d project keys, %d admin keys made at runtime",
            runtime.version, len(runtime.projects), len(runtime.keys), len(runtime.admin_keys),
        )  # fmt: skip

    async def reload(self) -> int:
        """Read the projects and keys again and hold them; their version."""
        async with self._loading:
            directory = await self.call(self._store.directory, self._config.tenant_max_priority)
            if directory.version >= self.version:
                self._guard.use(directory)
            return self.version

    async def changed(self) -> None:
        """This process has just changed the control plane: hold the change before its
        answer is sent, and tell the other processes."""
        try:
            version = await self.reload()
        except SQLAlchemyError as exc:  # committed: the next poll reads it
            log.warning("could not read the control plane after a change: %s", exc)
            version = self.version + 1
        try:
            async with asyncio.timeout(PUBLISH_SECONDS):
                await self._redis.publish(self._config.keys.control_changed, str(version))
        except (TimeoutError, RedisError, OSError) as exc:
            log.warning(
                "could not announce a control plane change (Redis: %r); other API processes see it within"
                " CONTROL_POLL_SECONDS (%gs)", exc, self._config.control_poll_seconds,
            )  # fmt: skip

    async def run(self) -> None:
        """Until cancelled: reload on each notice, and every CONTROL_POLL_SECONDS if the
        database's version is not the one held."""
        listener = asyncio.create_task(self._listen(), name="control plane notices")
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._config.control_poll_seconds):
                        await self._stale.wait()
                notified = self._stale.is_set()
                self._stale.clear()
                await self._refresh(notified)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def _refresh(self, notified: bool) -> None:
        try:
            if notified or await self.call(self._store.version) != self.version:
                await self.reload()
        except (SQLAlchemyError, OSError) as exc:
            if not self._failing:
                log.warning(
                    "control plane database unavailable (%s): serving the projects and keys of version %d"
                    " until it is back",
                    exc, self.version,
                )  # fmt: skip
            self._failing = True
            return
        if self._failing:
            log.info("control plane database back: projects and keys at version %d", self.version)
        self._failing = False

    async def _listen(self) -> None:
        channel = self._config.keys.control_changed
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(channel)
                # What was announced while no one listened is read now.
                self._stale.set()
                while True:
                    message = await pubsub.get_message(timeout=LISTEN_SECONDS)
                    if message is not None and message.get("type") == "message":
                        self._stale.set()
            except (RedisError, OSError) as exc:
                log.debug("control plane notices: %s; subscribing again", exc)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()
            await asyncio.sleep(RESUBSCRIBE_SECONDS)
