"""Moving usage from Redis into the control plane's database: each finished minute's
`Keys.usage_buckets` hash (counted by the workers) becomes that minute's "1m" rows, and
its hour's and day's rows are summed again (shared/control/usage.py).

Every API process runs `UsageFlush.run`; one at a time records (a lock in Redis, held
while it works), every USAGE_FLUSH_SECONDS: the minutes from the one after the last
recorded (`Keys.usage_flushed`) to the last that ended `GRACE_SECONDS` ago (the workers'
clocks may lag the API's a little). Recording a minute twice counts it once, so a lost
cursor (Redis come back empty) or two processes at once (a lock that lapsed) cost
nothing but the work; and what Redis loses is at most the minutes not yet recorded:
the current one, and the last for up to USAGE_FLUSH_SECONDS + GRACE_SECONDS after it ended.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from shared.config import Config
from shared.contract.keys import USAGE_BUCKET_COUNTS, USAGE_BUCKET_SECONDS, Keys, usage_bucket_field
from shared.contract.scripts import BATCH_LOCK_RELEASE, BATCH_LOCK_RENEW
from shared.control.usage import Usage, UsageHistory

log = logging.getLogger(__name__)

GRACE_SECONDS = 3  # a minute is recorded once it ended this long ago
KEPT_MINUTES = USAGE_BUCKET_SECONDS // 60  # minutes Redis keeps: the most one flush reads
LOCK_SECONDS = 60  # the flush lock lapses after this, should its holder die
SWEEP_SECONDS = 3600  # how often old rows are deleted (shared/control/usage.py KEPT)


async def read_minutes(redis: aioredis.Redis, keys: Keys, minutes: Sequence[int]) -> list[Usage]:
    """The usage the workers counted in each of `minutes` (Unix seconds // 60), as rows of
    those minutes; in one round trip. Raises RedisError or OSError."""
    if not minutes:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for minute in minutes:
            pipe.hgetall(keys.usage_buckets(minute))
        found = await pipe.execute()
    rows: list[Usage] = []
    for minute, counts in zip(minutes, found, strict=True):
        by_group: dict[tuple[str, str, bool, str, str], dict[str, int]] = {}
        for raw_field, raw_value in counts.items():
            try:
                tenant, key_id, batch, kind, model, count = usage_bucket_field(raw_field.decode())
                value = int(raw_value)
            except ValueError:
                continue  # not a field the workers write
            if count in USAGE_BUCKET_COUNTS:
                by_group.setdefault((tenant, key_id, batch, kind, model), {})[count] = value
        for (tenant, key_id, batch, kind, model), found_counts in sorted(by_group.items()):
            counted = [found_counts.get(count, 0) for count in USAGE_BUCKET_COUNTS]
            rows.append(Usage(minute * 60, tenant, model, key_id, batch, kind, *counted))
    return rows


class UsageFlush:
    """Records finished minutes' usage in the database, one API process at a time."""

    def __init__(self, config: Config, history: UsageHistory, redis: aioredis.Redis) -> None:
        self._config = config
        self._keys = config.keys
        self._history = history
        self._redis = redis
        self._renew = redis.register_script(BATCH_LOCK_RENEW)  # a lock held by one process: the same script
        self._release = redis.register_script(BATCH_LOCK_RELEASE)
        self._me = f"{os.getpid()}-{os.urandom(4).hex()}"
        self._swept_at = 0.0

    async def run(self) -> None:
        """Record finished minutes every USAGE_FLUSH_SECONDS (and sweep old rows hourly),
        until cancelled; a failure is logged and tried again next time."""
        while True:
            try:
                await self.flush()
                if time.monotonic() - self._swept_at >= SWEEP_SECONDS:
                    removed = await asyncio.to_thread(self._history.sweep)
                    self._swept_at = time.monotonic()
                    if removed:
                        log.info("usage history: %d rows past their keeping deleted", removed)
            except (RedisError, OSError, SQLAlchemyError) as exc:
                log.warning("usage history: recording failed (tried again shortly): %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(self._config.usage_flush_seconds)

    async def flush(self, now: float | None = None) -> int:
        """Record the minutes ended since the last recorded (when this process holds the
        lock); the number of minutes read. Raises RedisError, OSError, SQLAlchemyError."""
        now = time.time() if now is None else now
        if not await self._renew(keys=[self._keys.usage_flush_lock], args=[self._me, LOCK_SECONDS]):
            return 0
        try:
            last = int((now - GRACE_SECONDS) // 60) - 1  # the last minute ended GRACE_SECONDS ago
            cursor = await self._redis.get(self._keys.usage_flushed)
            first = max(int(cursor) + 1 if cursor else 0, last - KEPT_MINUTES + 1)
            if first > last:
                return 0
            minutes = list(range(first, last + 1))
            rows = await read_minutes(self._redis, self._keys, minutes)
            await asyncio.to_thread(self._history.record, rows)
            await self._redis.set(self._keys.usage_flushed, last)
            return len(minutes)
        finally:
            await self._release(keys=[self._keys.usage_flush_lock], args=[self._me])
