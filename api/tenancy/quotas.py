"""A tenant's quotas on its jobs: tokens per minute and per UTC day, jobs in flight,
and the streams its clients read at once.

Checked as a job is accepted, before its claim, by one script (the contract's ADMIT),
so the counts hold across API processes. Tokens are those the model server reported
(prompt and completion), counted by the worker as it stores a job's first result
(tasks/result_store.py): a tenant's jobs in flight when its quota is reached still
finish, so it may go over by what they use. Requests per minute are the guard's.
A project with a spend limit is refused (429 insufficient_quota) by the same script once
its spend this UTC month reached it: its cost counted by the worker with its tokens, its
month started from the usage history when Redis holds none (api/tenancy/spend.py).
Streams are counted as a client begins reading one (the contract's STREAM_JOIN, which
counts the job's readers too: no round trip more), before anything is queued for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import replace

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from api.errors import ResultStoreUnavailable, SpendLimitReached, TooManyRequests
from api.observability.metrics import Metrics
from shared.config import Config
from shared.contract import ADMIT, STREAM_JOIN, STREAM_LEAVE
from shared.contract.keys import NANO_PER_CENT, SPEND_KEPT_AFTER_MONTH, TokenWindow, usage_month
from shared.tenants import Quotas as TenantQuotas
from shared.tenants import Tenant

log = logging.getLogger(__name__)

# A tenant's quotas left out: only its spend limit checked (Quotas.check_spend).
NO_QUOTAS = TenantQuotas()


def spend_refusal(project: str, spent: int, limit_cents: int) -> str:
    """The message of a request refused for its project's monthly spend limit."""
    return (
        f"project {project!r} reached its monthly spend limit: it spent {_usd(spent)} this UTC month, its limit is"
        f" {limit_cents / 100:.2f} USD; requests are refused until the limit is raised or the month ends"
    )


def _usd(nano: int) -> str:
    return f"{nano / 1e9:.4f} USD"


# A reader's place among its tenant's streams lapses this long after its API process
# last renewed it (every STREAM_RENEW seconds): a process that died gives its places back.
STREAM_LAPSE = 60.0
STREAM_RENEW = 20.0


class Quotas:
    """Admits a tenant's jobs under its quotas; one per API process."""

    def __init__(
        self,
        config: Config,
        store: aioredis.Redis,
        metrics: Metrics,
        shared: bool = True,
        spent: Callable[[str, str], int] | None = None,
    ) -> None:
        """`shared`: several tenants share the gateway (the deployment's STREAMS_IN_FLIGHT
        is then every tenant's unless its own says; alone, a tenant has only its own).
        `spent(project, month)`: what the project spent that UTC month as the usage history
        says (api/tenancy/spend.py), nano-USD, where its count in Redis starts when Redis
        holds none (0 without it)."""
        self._config = config
        self._spent = spent or (lambda _project, _month: 0)
        self._shared = shared
        self._store = store
        self._metrics = metrics
        self._admit = store.register_script(ADMIT)
        self._join = store.register_script(STREAM_JOIN)
        self._leave = store.register_script(STREAM_LEAVE)
        self._reading: dict[str, str] = {}  # this process's readers: token -> tenant

    @staticmethod
    def applies(tenant: Tenant) -> bool:
        quotas = tenant.quotas
        limited = quotas.tokens_per_minute or quotas.tokens_per_day or quotas.jobs_in_flight
        return bool(limited) or tenant.spend_limit is not None

    async def admit(self, tenant: Tenant, job_id: str) -> None:
        """Count the job among the tenant's, or refuse it (429 naming the quota, with Retry-After)."""
        if not self.applies(tenant):
            return
        quotas, keys = tenant.quotas, self._config.keys
        now = time.time()
        names = [keys.in_flight(tenant.name), *keys.token_windows(tenant.name, now)]
        args = [
            job_id, repr(now), quotas.jobs_in_flight or 0, quotas.tokens_per_minute or 0,
            quotas.tokens_per_day or 0, keys.result(""), self._config.job_ttl,
        ]  # fmt: skip
        if tenant.spend_limit is not None:
            month, _, ends = usage_month(now)
            names.append(keys.spend(tenant.name, month))
            ttl = int(ends - now) + SPEND_KEPT_AFTER_MONTH
            args += [tenant.spend_limit * NANO_PER_CENT, self._spent(tenant.name, month), ttl]
        try:
            refused = await self._admit(keys=names, args=args)
        except (RedisError, OSError):
            raise ResultStoreUnavailable("result store (Redis) unavailable") from None
        if not refused:
            return
        quota, used = refused[0].decode(), int(refused[1])
        self._metrics.quota_refusals.labels(tenant.name, quota).inc()
        if quota == "spend_limit":
            raise SpendLimitReached(spend_refusal(tenant.name, used, tenant.spend_limit or 0))
        if quota == "jobs_in_flight":
            raise TooManyRequests(
                f"quota jobs_in_flight: tenant {tenant.name!r} has {used} jobs queued or running, at most"
                f" {quotas.jobs_in_flight}; try again when one has finished",
                retry_after=1,
            )
        window = TokenWindow.MINUTE if quota == "tokens_per_minute" else TokenWindow.DAY
        retry = max(1, int(window.ends_at(now) - now) + 1)
        limit = quotas.tokens_per_minute if quota == "tokens_per_minute" else quotas.tokens_per_day
        raise TooManyRequests(
            f"quota {quota}: tenant {tenant.name!r} has used {used} tokens this {window.said}, at most {limit};"
            f" try again in {retry}s",
            retry_after=retry,
        )

    async def check_spend(self, tenant: Tenant) -> None:
        """Refuse what would spend (a batch made) once the tenant's spend this month reached
        its spend limit (429 insufficient_quota); no call when it has none."""
        if tenant.spend_limit is None:
            return
        await self.admit(replace(tenant, quotas=NO_QUOTAS), "")

    async def release(self, tenant: Tenant, job_id: str) -> None:
        """A job admitted, then not queued (refused): no longer counted in flight."""
        if not tenant.quotas.jobs_in_flight:
            return
        # If Redis cannot be told, it is dropped once older than a job's TTL.
        with contextlib.suppress(RedisError, OSError):
            await self._store.zrem(self._config.keys.in_flight(tenant.name), job_id)

    def streams_limit(self, tenant: Tenant) -> int:
        """How many streams the tenant's clients may read at once (0: no limit)."""
        return tenant.quotas.streams_in_flight or (self._config.streams_in_flight if self._shared else 0)

    async def join_stream(self, tenant: Tenant, job_key: str) -> str:
        """One more of the tenant's clients reads the job's stream, or it is refused (429
        naming streams_in_flight): the reader's token."""
        keys, token, now = self._config.keys, uuid.uuid4().hex, time.time()
        limit = self.streams_limit(tenant)
        args = [token, int(now * 1000), int((now + STREAM_LAPSE) * 1000), limit, self._config.job_ttl]
        try:
            reading = await self._join(keys=[keys.streams(tenant.name), keys.stream_readers(job_key)], args=args)
        except (RedisError, OSError):
            raise ResultStoreUnavailable("result store (Redis) unavailable") from None
        if int(reading) >= 0:
            self._metrics.quota_refusals.labels(tenant.name, "streams_in_flight").inc()
            raise TooManyRequests(
                f"quota streams_in_flight: tenant {tenant.name!r} reads {reading} streams at once, at most {limit};"
                " try again when one has ended",
                retry_after=1,
            )
        if limit:
            self._reading[token] = tenant.name
        return token

    async def leave_stream(self, tenant: Tenant, job_key: str, token: str) -> int:
        """The reader of `token` stopped: its place is free; how many clients still read the
        job's stream (1 when Redis cannot say: a job is not cancelled on a guess)."""
        keys = self._config.keys
        self._reading.pop(token, None)
        try:
            left = await self._leave(keys=[keys.streams(tenant.name), keys.stream_readers(job_key)], args=[token])
        except (RedisError, OSError) as exc:
            # Its place lapses by itself (STREAM_LAPSE), as this process no longer renews it.
            log.warning("could not count a reader of job %s out: %s", job_key, exc)
            return 1
        return int(left)

    async def keep_streams(self) -> None:
        """Renew this process's readers' places, every STREAM_RENEW seconds, for ever."""
        while True:
            await asyncio.sleep(STREAM_RENEW)
            reading = dict(self._reading)
            if not reading:
                continue
            lapses = int((time.time() + STREAM_LAPSE) * 1000)
            try:
                async with self._store.pipeline(transaction=False) as pipe:
                    for token, tenant in reading.items():
                        pipe.zadd(self._config.keys.streams(tenant), {token: lapses}, xx=True)
                    for tenant in set(reading.values()):
                        pipe.pexpireat(self._config.keys.streams(tenant), lapses)
                    await pipe.execute()
            except (RedisError, OSError) as exc:
                log.warning("could not renew %d stream readers' places: %s", len(reading), exc)
