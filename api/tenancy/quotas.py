"""A tenant's quotas on its jobs: tokens per minute and per UTC day, jobs in flight,
and the streams its clients read at once.

And a project's rate limits on each model (set through the Administration API,
``projects.rate_limits``; shared/tenants.py `ModelLimits`): requests per minute and
per UTC day, and tokens per minute, counted per project and model; and its spend limit
(``projects.spend_limit``): 429 insufficient_quota once its spend this UTC month reached
it, its cost counted by the worker with its tokens, its month started from the usage
history when Redis holds none (api/tenancy/spend.py).

Checked as a job is accepted, before its claim, by one script (the contract's ADMIT:
the quotas, the model's limits and the spend limit in the one call), so the counts hold
across API processes; a job refused leaves nothing counted. Tokens are those the model
server reported (prompt and completion), counted by the worker as it stores a job's
first result (tasks/result_store.py; a model's, to the model the job asked for): a
tenant's jobs in flight when its quota is reached still finish, so it may go over by
what they use. A tenant's requests per minute are the guard's; a model's, admitted jobs here.
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
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from api.errors import RateLimitExceeded, ResultStoreUnavailable, SpendLimitReached, TooManyRequests
from api.observability.metrics import Metrics
from shared.config import Config
from shared.contract import ADMIT, STREAM_JOIN, STREAM_LEAVE
from shared.contract.keys import NANO_PER_CENT, SPEND_KEPT_AFTER_MONTH, TokenWindow, model_use_prefix, usage_month
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

# A project's rate limits per model, as ADMIT names the one reached: the `ModelLimits`
# field it is, and how OpenAI's refusal words it (its `type`, its name in a message).
RATE_LIMITS = {
    "max_requests_per_1_minute": "requests_per_minute",
    "max_tokens_per_1_minute": "tokens_per_minute",
    "max_requests_per_1_day": "requests_per_day",
}
SAID = {
    "max_requests_per_1_minute": ("requests", "requests per min (RPM)", TokenWindow.MINUTE),
    "max_tokens_per_1_minute": ("tokens", "tokens per min (TPM)", TokenWindow.MINUTE),
    "max_requests_per_1_day": ("requests", "requests per day (RPD)", TokenWindow.DAY),
}


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

    async def admit(self, tenant: Tenant, job_id: str, model: str = "") -> None:
        """Count the job among the tenant's, or refuse it (429 naming the quota, with
        Retry-After); and among its requests of `model` (the registry's name), under its
        project's rate limits on it (429 ``rate_limit_exceeded`` naming the limit and the
        model). A tenant with neither costs one dict lookup, and no call to Redis."""
        limits = tenant.model_limits.get(model)
        if limits is not None and not limits.interactive:
            limits = None  # a limit on its batches only (api/openai/batches/keeper.py)
        if limits is None and not self.applies(tenant):
            return
        quotas, keys = tenant.quotas, self._config.keys
        now = time.time()
        names = [keys.in_flight(tenant.name), *keys.token_windows(tenant.name, now)]
        args: list[Any] = [
            job_id, repr(now), quotas.jobs_in_flight or 0, quotas.tokens_per_minute or 0,
            quotas.tokens_per_day or 0, keys.result(""), self._config.job_ttl,
        ]  # fmt: skip
        if limits is not None:
            names += keys.model_use_windows(tenant.name, now)
            args += [model_use_prefix(model), limits.requests_per_minute, limits.tokens_per_minute,
                     limits.requests_per_day]  # fmt: skip
        if tenant.spend_limit is not None:
            if limits is None:  # the model's keys and arguments are ADMIT's before the spend's
                names += ["", ""]
                args += ["", 0, 0, 0]
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
        if limits is not None and quota in RATE_LIMITS:
            raise rate_limited(tenant.name, model, quota, getattr(limits, RATE_LIMITS[quota]), used, now)
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

    async def release(self, tenant: Tenant, job_id: str, model: str = "") -> None:
        """A job admitted, then not queued (refused): no longer counted in flight, nor
        among its requests of `model` (those of the minute and day it is released in)."""
        limits = tenant.model_limits.get(model)
        counted = limits is not None and limits.interactive
        if not tenant.quotas.jobs_in_flight and not counted:
            return
        keys, now = self._config.keys, time.time()
        # If Redis cannot be told, it is dropped once older than a job's TTL (and its
        # request stays counted until its window ends).
        with contextlib.suppress(RedisError, OSError):
            async with self._store.pipeline(transaction=False) as pipe:
                if tenant.quotas.jobs_in_flight:
                    pipe.zrem(keys.in_flight(tenant.name), job_id)
                if counted:
                    for window in keys.model_use_windows(tenant.name, now):
                        pipe.hincrby(window, f"{model_use_prefix(model)}requests", -1)
                await pipe.execute()

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


def rate_limited(project: str, model: str, name: str, limit: int, used: int, now: float) -> RateLimitExceeded:
    """OpenAI's refusal of a rate limit reached (its words, the limit's name in the
    Administration API, and when its window ends)."""
    kind, said, window = SAID[name]
    retry = max(1, int(window.ends_at(now) - now) + 1)
    # A request is one; its tokens are known only once it has run, so none is said asked.
    requested = ", Requested 1" if kind == "requests" else ""
    return RateLimitExceeded(
        f"Rate limit reached for {model} in project {project} on {said}: Limit {limit}, Used {used}{requested}"
        f" ({name}). Please try again in {retry}s.",
        kind=kind,
        retry_after=retry,
    )
