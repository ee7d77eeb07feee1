"""What projects with a spend limit spent this UTC month, as this API process knows it.

A project's month is counted in Redis (the contract's `Keys.spend`, nano-USD): the
workers add each job's cost as they store its result, the API's admission script
(ADMIT, api/tenancy/quotas.py) refuses its requests once the count reaches its limit.
That count must not start again from 0 when Redis comes back empty: it is made only by
the API, from what the usage history (the control plane's ``usage_buckets``, at most
about a minute behind Redis) says the project spent this month, and the workers add
to it only once it is made. So this process holds that figure for every project with a
limit, read every SPEND_SEED_SECONDS and whenever the control plane changes, never per
request; and a limit set through the admin API makes its project's count before it is
committed, so no process counts that month from 0.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from shared.config import Config
from shared.contract.keys import SPEND_KEPT_AFTER_MONTH, usage_month
from shared.control.store import ControlStore
from shared.tenants import Tenants

log = logging.getLogger(__name__)

# Seconds between two looks at whether the control plane changed (a limit set or removed).
LOOK_SECONDS = 1.0


class MonthSpend:
    """Each limited project's spend this UTC month in the usage history, held in memory."""

    def __init__(
        self,
        config: Config,
        store: ControlStore,
        tenants: Tenants,
        redis: aioredis.Redis,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._store = store
        self._tenants = tenants
        self._redis = redis
        self._clock = clock
        self._month = ""
        self._spent: dict[str, int] = {}
        self._read_at_version = -1
        self._failing = False

    def __call__(self, project: str, month: str) -> int:
        """What `project` spent in `month` (YYYY-MM) as last read, nano-USD (0: not read)."""
        return self._spent.get(project, 0) if month == self._month else 0

    def limited(self) -> list[str]:
        """The projects with a spend limit, as this process holds them."""
        projects = self._tenants.runtime.projects
        return sorted(name for name, tenant in projects.items() if tenant.spend_limit is not None)

    async def refresh(self) -> None:
        """Read the limited projects' spend this month again (none: no query)."""
        version = self._tenants.runtime.version
        month, start, end = usage_month(self._clock())
        projects = self.limited()
        spent = await asyncio.to_thread(self._store.month_costs, start, end, projects) if projects else {}
        self._month, self._spent, self._read_at_version = month, spent, version

    async def run(self) -> None:
        """Until cancelled: read again every SPEND_SEED_SECONDS, and at once when the
        control plane's version changed; a database away keeps the figures held."""
        last = time.monotonic()
        while True:
            await asyncio.sleep(LOOK_SECONDS)
            due = time.monotonic() - last >= self._config.spend_seed_seconds
            if not due and self._tenants.runtime.version == self._read_at_version:
                continue
            try:
                await self.refresh()
            except (SQLAlchemyError, OSError) as exc:
                if not self._failing:
                    log.warning("could not read the month's spend of limited projects (%s): keeping the last read", exc)
                self._failing = True
                continue
            self._failing = False
            last = time.monotonic()

    async def start_counting(self, project: str) -> None:
        """Make the project's count of this month in Redis, if it has none, from the usage
        history: done before its limit is committed, so no admission counts from 0."""
        now = self._clock()
        month, start, end = usage_month(now)
        spent = (await asyncio.to_thread(self._store.month_costs, start, end, [project])).get(project, 0)
        key = self._config.keys.spend(project, month)
        try:
            await self._redis.set(key, spent, nx=True, ex=int(end - now) + SPEND_KEPT_AFTER_MONTH)
        except (RedisError, OSError) as exc:  # admissions fail too while Redis is away
            log.warning("could not start counting project %s's spend in Redis: %s", project, exc)

    async def spent_now(self, project: str) -> int:
        """What the project spent this month, nano-USD: Redis's count, or the usage
        history's when Redis holds none (or is away)."""
        now = self._clock()
        month, start, end = usage_month(now)
        try:
            counted = await self._redis.get(self._config.keys.spend(project, month))
        except (RedisError, OSError):
            counted = None
        if counted is not None:
            return int(counted)
        return (await asyncio.to_thread(self._store.month_costs, start, end, [project])).get(project, 0)
