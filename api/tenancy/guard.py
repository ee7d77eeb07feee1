"""Who is asking, and whether they may: API keys and rate limits.

- API keys (``API_KEYS``, ``API_KEYS_FILE``, and projects' keys made at runtime): every
  endpoint but the probes needs ``Authorization: Bearer <key>``; keys are kept as
  SHA-256 digests, looked up by digest, and never logged. Each key is a tenant's
  (shared/tenants.py; a project is a tenant). The route class (api/http/route_class.py)
  asks the guard on the request's headers, before its body is read, and puts the tenant
  on the request for the routes, which hand it on as an argument. Without keys
  configured, a request is the default tenant's, unless it presents a project's key
  (its project's) or a project key that is no longer valid (``sk-proj-…``: 401).
- Admin API keys (``ADMIN_API_KEYS``, and those made at runtime): the only keys that
  reach ``/v1/organization/*``; refused (403) on every tenant's endpoint.
- Rate limit (a tenant's ``requests_per_minute``; ``RATE_LIMIT_PER_MINUTE`` the default
  tenant's): requests per tenant (per client address when no keys are configured) per
  minute, counted in Redis so it holds across API processes.
- Operators' endpoints (``/metrics``, ``/scaling``): a tenant's admin keys (``admin: true``),
  admin API keys and ``METRICS_TOKEN``; admins' actions (``/dead_letters``): a tenant's
  admin keys only; the organization's (``/v1/organization/*``): admin API keys only.
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
from shared.control.ids import PROJECT_KEY
from shared.tenants import DEFAULT_TENANT, EVERYONE, AdminGrant, Directory, Owner, Tenant, Tenants, digest, load_tenants

log = logging.getLogger(__name__)
access = logging.getLogger("api.access")


def load_tenants_of(config: Config) -> Tenants:
    """The tenants of the configured keys (none: the API is open, all of the default tenant)."""
    keys = config.api_keys.get_secret_value() if config.api_keys else ""
    admins = config.admin_api_keys.get_secret_value() if config.admin_api_keys else ""
    return load_tenants(keys, config.api_keys_file, config.rate_limit_per_minute, config.tenant_max_priority, admins)


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
        if self.tenants.admins:
            log.info("admin API keys: %d configured (ADMIN_API_KEYS), for /v1/organization/*", len(self.tenants.admins))

    async def admit(self, authorization: str, client: str) -> Tenant:
        """The tenant of the key a request presents (its ``Authorization`` header), within
        its rate limit (401, 429 otherwise); `client` is its address."""
        who, tenant = self._authenticate(authorization, client)
        rpm = tenant.quotas.requests_per_minute
        if rpm:
            # Counted per tenant; without keys, per client address (all are the default tenant).
            await self._limit_rate(who if self._anonymous(tenant) else f"tenant:{tenant.name}", rpm, tenant)
        return tenant

    def owner(self, tenant: Tenant) -> Owner:
        """Whose files and batches `tenant`'s requests see: its own (every one, without keys)."""
        if self._anonymous(tenant):
            return EVERYONE
        return self._owners.get(tenant.name) or Owner(f"tenant:{tenant.name}")

    def _anonymous(self, tenant: Tenant) -> bool:
        """Whether `tenant` is everyone's: the default tenant of a gateway without keys."""
        return not self.tenants.keyed and tenant.name == DEFAULT_TENANT

    def use(self, directory: Directory) -> None:
        """Hold `directory`'s projects and keys from now on (the control plane's, as read
        from its database), in place of those held until now."""
        self.tenants.runtime = directory

    async def admin(self, authorization: str) -> AdminGrant:
        """The admin API key a request to ``/v1/organization/*`` presents: 401 without one
        (or an unknown one), 403 for a tenant's key."""
        presented = _bearer(authorization)
        if not presented:
            raise Unauthorized("missing admin API key: send the header 'Authorization: Bearer <admin key>'")
        given, now = digest(presented), time.time()
        grant = self.tenants.admin(given, now)
        if grant is not None:
            return grant
        if self.tenants.find(given, now) is not None:
            raise Forbidden("a project's key cannot manage the organization: /v1/organization/* takes an admin API key")
        raise Unauthorized("invalid admin API key")

    async def operator(self, authorization: str) -> None:
        """The operators' endpoints (/metrics, /scaling): with API keys, an admin key or
        ``METRICS_TOKEN`` (403 to a tenant's key); without, open unless METRICS_TOKEN is set."""
        token = self._config.metrics_token.get_secret_value() if self._config.metrics_token else ""
        presented = _bearer(authorization)
        if token and presented and hmac.compare_digest(digest(presented), digest(token)):
            return
        if presented and self.tenants.admin(digest(presented), time.time()) is not None:
            return
        if not self.tenants.keyed:
            if token:
                raise Unauthorized("this endpoint needs METRICS_TOKEN: send 'Authorization: Bearer <token>'")
            return
        _, tenant = self._authenticate(authorization, "")
        if not tenant.admin:
            raise Forbidden("an operators' endpoint: it answers admin keys and METRICS_TOKEN, not a tenant's key")

    async def tenant_admin(self, authorization: str) -> Tenant:
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
        anyone = f"addr:{client or 'unknown'}"
        presented = _bearer(authorization)
        if not presented:
            if not self.tenants.keyed:
                return anyone, self.tenants.get(DEFAULT_TENANT)
            raise Unauthorized("missing API key: send the header 'Authorization: Bearer <key>'")
        given, now = digest(presented), time.time()
        # By digest, in a dict (shared/tenants.py Tenants.find says why that leaks nothing).
        found = self.tenants.find(given, now)
        if found is not None:
            return f"key:{given.hex()[:16]}", found
        if self.tenants.admin(given, now) is not None:
            raise Forbidden(
                "an admin API key manages the organization (/v1/organization/*); it cannot call this endpoint:"
                " use a project's key"
            )
        # Without keys configured, any other key is anyone's (clients send one they were
        # never given: "not-needed"); but a project's key that no longer works (deleted,
        # expired, its project archived) is refused, not served as everyone's.
        if not self.tenants.keyed and not presented.startswith(PROJECT_KEY):
            return anyone, self.tenants.get(DEFAULT_TENANT)
        raise Unauthorized("invalid API key")

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


def _bearer(authorization: str) -> str:
    """The key of an ``Authorization: Bearer <key>`` header ('' for none)."""
    scheme, _, presented = authorization.partition(" ")
    return presented.strip() if scheme.lower() == "bearer" else ""
