"""A tenant's quotas on its jobs: tokens per minute and per UTC day, jobs in flight.

Checked as a job is accepted, before its claim, by one script (the contract's ADMIT),
so the counts hold across API processes. Tokens are those the model server reported
(prompt and completion), counted by the worker as it stores a job's first result
(tasks/result_store.py): a tenant's jobs in flight when its quota is reached still
finish, so it may go over by what they use. Requests per minute are the guard's.
"""

from __future__ import annotations

import contextlib
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from api.errors import ResultStoreUnavailable, TooManyRequests
from api.observability.metrics import Metrics
from shared.config import Config
from shared.contract import ADMIT
from shared.tenants import Tenant

DAY = 86_400


class Quotas:
    """Admits a tenant's jobs under its quotas; one per API process."""

    def __init__(self, config: Config, store: aioredis.Redis, metrics: Metrics) -> None:
        self._config = config
        self._store = store
        self._metrics = metrics
        self._admit = store.register_script(ADMIT)

    @staticmethod
    def applies(tenant: Tenant) -> bool:
        quotas = tenant.quotas
        return bool(quotas.tokens_per_minute or quotas.tokens_per_day or quotas.jobs_in_flight)

    async def admit(self, tenant: Tenant, job_id: str) -> None:
        """Count the job among the tenant's, or refuse it (429 naming the quota, with Retry-After)."""
        if not self.applies(tenant):
            return
        quotas, keys = tenant.quotas, self._config.keys
        now = time.time()
        names = [
            keys.in_flight(tenant.name),
            keys.tokens(tenant.name, "m", int(now // 60)),
            keys.tokens(tenant.name, "d", int(now // DAY)),
        ]
        args = [
            job_id, repr(now), quotas.jobs_in_flight or 0, quotas.tokens_per_minute or 0,
            quotas.tokens_per_day or 0, keys.result(""), self._config.job_ttl,
        ]  # fmt: skip
        try:
            refused = await self._admit(keys=names, args=args)
        except (RedisError, OSError):
            raise ResultStoreUnavailable("result store (Redis) unavailable") from None
        if not refused:
            return
        quota, used = refused[0].decode(), int(refused[1])
        self._metrics.quota_refusals.labels(tenant.name, quota).inc()
        if quota == "jobs_in_flight":
            raise TooManyRequests(
                f"quota jobs_in_flight: tenant {tenant.name!r} has {used} jobs queued or running, at most"
                f" {quotas.jobs_in_flight}; try again when one has finished",
                retry_after=1,
            )
        span, window = (60, "minute") if quota == "tokens_per_minute" else (DAY, "UTC day")
        retry = max(1, int((now // span + 1) * span - now) + 1)
        limit = quotas.tokens_per_minute if quota == "tokens_per_minute" else quotas.tokens_per_day
        raise TooManyRequests(
            f"quota {quota}: tenant {tenant.name!r} has used {used} tokens this {window}, at most {limit};"
            f" try again in {retry}s",
            retry_after=retry,
        )

    async def release(self, tenant: Tenant, job_id: str) -> None:
        """A job admitted, then not queued (refused): no longer counted in flight."""
        if not tenant.quotas.jobs_in_flight:
            return
        # If Redis cannot be told, it is dropped once older than a job's TTL.
        with contextlib.suppress(RedisError, OSError):
            await self._store.zrem(self._config.keys.in_flight(tenant.name), job_id)
