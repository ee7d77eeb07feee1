"""Who is asking, and whether they may: API keys and rate limits.

- API keys (``API_KEYS``, ``API_KEYS_FILE``): every endpoint but the probes needs
  ``Authorization: Bearer <key>``; keys are kept as SHA-256 digests and compared in
  constant time, and never logged. Each key is a tenant's (shared/tenants.py). The
  route class (api/http/route_class.py) asks the guard on the request's headers, before
  its body is read, and puts the tenant on the request for the routes, which hand it
  on as an argument.
- Rate limit (a tenant's ``requests_per_minute``; ``RATE_LIMIT_PER_MINUTE`` the default
  tenant's): requests per tenant (per client address when no keys are configured) per
  minute, counted in Redis so it holds across API processes.
- Operators' endpoints (``/metrics``, ``/scaling``): admin keys and ``METRICS_TOKEN``;
  admins' actions (``/dead_letters``): admin keys only.
"""

from __future__ import annotations

import hmac
import logging
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from api.errors import Forbidden, ResultStoreUnavailable, TooManyRequests, Unauthorized
from api.observability.metrics import Metrics
from shared.config import Config
from shared.contract.scripts import RATE_COUNT
from shared.tenants import DEFAULT_TENANT, EVERYONE, Owner, Tenant, Tenants, digest, load_tenants

log = logging.getLogger(__name__)
access = logging.getLogger("api.access")


def load_tenants_of(config: Config) -> Tenants:
    """The tenants of the configured keys (none: the API is open, all of the default tenant)."""
    keys = config.api_keys.get_secret_value() if config.api_keys else ""
    return load_tenants(keys, config.api_keys_file, config.rate_limit_per_minute, config.tenant_max_priority)


class Guard:
    """The gateway's routers depend on it: ``dependencies=[Depends(guard)]``."""

    def __init__(self, config: Config, store: aioredis.Redis, metrics: Metrics) -> None:
        self._config = config
        self._metrics = metrics
        self.tenants = load_tenants_of(config)
        self._count = store.register_script(RATE_COUNT)
        # Whose files and batches each tenant's keys see: the tenant's, and what its keys
        # owned before tenants owned them (``key:`` and the digest's first 16 hex digits).
        legacy: dict[str, set[str]] = {}
        for key, tenant in self.tenants.by_digest.items():
            legacy.setdefault(tenant.name, set()).add(f"key:{key.hex()[:16]}")
        self._owners = {
            name: Owner(f"tenant:{name}", frozenset(legacy.get(name, ())), tenant.admin)
            for name, tenant in self.tenants.named.items()
        }  # fmt: skip
        if self.tenants.keyed:
            named = sorted({tenant.name for tenant in self.tenants.by_digest.values()})
            log.info(
                "API keys: %d configured, of %d tenants (%s); requests without one get 401",
                len(self.tenants.by_digest), len(named), ", ".join(named),
            )  # fmt: skip
        else:
            log.warning("no API keys configured (API_KEYS, API_KEYS_FILE): every endpoint is open to anyone")

    async def admit(self, authorization: str, client: str) -> Tenant:
        """The tenant of the key a request presents (its ``Authorization`` header), within
        its rate limit (401, 429 otherwise); `client` is its address."""
        who, tenant = self._authenticate(authorization, client)
        rpm = tenant.quotas.requests_per_minute
        if rpm:
            # Counted per tenant; without keys, per client address (all are the default tenant).
            await self._limit_rate(f"tenant:{tenant.name}" if self.tenants.keyed else who, rpm, tenant)
        return tenant

    def owner(self, tenant: Tenant) -> Owner:
        """Whose files and batches `tenant`'s requests see: its own (every one, without keys)."""
        return self._owners[tenant.name] if self.tenants.keyed else EVERYONE

    async def operator(self, authorization: str) -> None:
        """The operators' endpoints (/metrics, /scaling): with API keys, an admin key or
        ``METRICS_TOKEN`` (403 to a tenant's key); without, open unless METRICS_TOKEN is set."""
        token = self._config.metrics_token.get_secret_value() if self._config.metrics_token else ""
        scheme, _, presented = authorization.partition(" ")
        presented = presented.strip() if scheme.lower() == "bearer" else ""
        if token and presented and hmac.compare_digest(digest(presented), digest(token)):
            return
        if not self.tenants.keyed:
            if token:
                raise Unauthorized("this endpoint needs METRICS_TOKEN: send 'Authorization: Bearer <token>'")
            return
        _, tenant = self._authenticate(authorization, "")
        if not tenant.admin:
            raise Forbidden("an operators' endpoint: it answers admin keys and METRICS_TOKEN, not a tenant's key")

    async def admin(self, authorization: str) -> Tenant:
        """The admins' actions (replaying dead letters): with API keys, an admin key only
        (403 to a tenant's key; METRICS_TOKEN reads figures, it acts on nothing); without,
        as the operators' endpoints."""
        if not self.tenants.keyed:
            await self.operator(authorization)
            return self.tenants.get(DEFAULT_TENANT)
        _, tenant = self._authenticate(authorization, "")
        if not tenant.admin:
            raise Forbidden("an admin's action: it answers admin keys only, not a tenant's key")
        return tenant

    def _authenticate(self, authorization: str, client: str) -> tuple[str, Tenant]:
        if not self.tenants.keyed:
            return f"addr:{client or 'unknown'}", self.tenants.get(DEFAULT_TENANT)
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise Unauthorized("missing API key: send the header 'Authorization: Bearer <key>'")
        given = digest(presented.strip())
        # Every key is compared, in constant time: the answer takes as long for any key.
        found: Tenant | None = None
        for key, tenant in self.tenants.by_digest.items():
            if hmac.compare_digest(given, key):
                found = tenant
        if found is None:
            raise Unauthorized("invalid API key")
        return f"key:{given.hex()[:16]}", found

    async def _limit_rate(self, who: str, limit: int, tenant: Tenant) -> None:
        now = time.time()
        window = int(now // 60)
        key = self._config.keys.rate(who, window)
        try:
            count = await self._count(keys=[key], args=[61])
        except (RedisError, OSError):
            raise ResultStoreUnavailable("result store (Redis) unavailable") from None
        if count > limit:
            # Counted with the tenant's other quotas (llm_api_quota_refusals_total), as it is worded.
            self._metrics.quota_refusals.labels(tenant.name, "requests_per_minute").inc()
            retry = max(1, int((window + 1) * 60 - now) + 1)
            setting = "RATE_LIMIT_PER_MINUTE" if tenant.name == DEFAULT_TENANT else "quota requests_per_minute"
            raise TooManyRequests(
                f"rate limit: tenant {tenant.name!r} may send {limit} requests per minute ({setting});"
                f" try again in {retry}s",
                retry_after=retry,
            )
