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
which, for /metrics. Expiring keys need no
reload: each key's expiry is checked as it is presented.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

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


class ControlSync:
    """Keeps the guard's projects and keys those of the control plane's database."""

    def __init__(self, config: Config, store: ControlStore, guard: Guard, redis: aioredis.Redis) -> None:
        self._config = config
        self._store = store
        self._guard = guard
        self._redis = redis
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

    async def start(self) -> None:
        """Bring the database's schema to its head and read what it holds, before the
        first request: a database that cannot be reached stops the API's start."""
        try:
            await asyncio.to_thread(migrate, self._store.engine)
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
            directory = await asyncio.to_thread(self._store.directory, self._config.tenant_max_priority)
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
            if notified or await asyncio.to_thread(self._store.version) != self.version:
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
