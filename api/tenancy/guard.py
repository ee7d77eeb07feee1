"""What stands between the network and the queue: API keys, rate limits, input limits.

- API keys (``API_KEYS``, ``API_KEYS_FILE``): every route of the gateway's routers
  needs ``Authorization: Bearer <key>``; keys are kept as SHA-256 digests and
  compared in constant time, and never logged. Each key is a tenant's
  (shared/tenants.py); the request's tenant is put on ``request.state.tenant``, and
  the routes hand it to the job runner as an argument (api/deps.py: ``TenantDep``).
- Rate limit (a tenant's ``requests_per_minute``; ``RATE_LIMIT_PER_MINUTE`` the default
  tenant's): requests per tenant (per client address when no keys are configured) per
  minute, counted in Redis so it holds across API processes.
- Limits on what a job may hold (``MAX_*``): checked on every job, whichever endpoint
  it came through, before anything is queued.

Bodies larger than ``MAX_BODY_BYTES`` are refused by every route (api/http/route_class.py).
"""

from __future__ import annotations

import hmac
import logging
import time
from typing import Any

import redis.asyncio as aioredis
from fastapi import Request
from redis.exceptions import RedisError

from api.http.errors import ApiError, ResultStoreUnavailable
from shared.config import Config
from shared.contract.scripts import RATE_COUNT
from shared.telemetry.logs import current_job
from shared.tenants import DEFAULT_TENANT, EVERYONE, Owner, Tenant, Tenants, digest, load_tenants

log = logging.getLogger(__name__)
access = logging.getLogger("api.access")


class Unauthorized(ApiError):
    status_code = 401

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class TooManyRequests(ApiError):
    status_code = 429


class Forbidden(ApiError):
    status_code = 403


class LimitExceeded(ApiError):
    """The job holds more than a configured limit allows."""

    status_code = 422


def load_tenants_of(config: Config) -> Tenants:
    """The tenants of the configured keys (none: the API is open, all of the default tenant)."""
    keys = config.api_keys.get_secret_value() if config.api_keys else ""
    return load_tenants(keys, config.api_keys_file, config.rate_limit_per_minute)


class Guard:
    """The gateway's routers depend on it: ``dependencies=[Depends(guard)]``."""

    def __init__(self, config: Config, store: aioredis.Redis) -> None:
        self._config = config
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

    async def __call__(self, request: Request) -> None:
        if getattr(request.state, "guarded", False):
            return  # checked already, before its body was read (api/http/route_class.py)
        request.state.guarded = True
        who, tenant = self._authenticate(request)
        # Whose files and batches the request sees: its tenant's (every one, without keys).
        request.state.owner = self._owners[tenant.name] if self.tenants.keyed else EVERYONE
        request.state.tenant = tenant
        current_job.set({"tenant": tenant.name})
        rpm = tenant.quotas.requests_per_minute
        if rpm:
            # Counted per tenant; without keys, per client address (all are the default tenant).
            await self._limit_rate(f"tenant:{tenant.name}" if self.tenants.keyed else who, rpm, tenant)

    async def operator(self, request: Request) -> None:
        """The operators' endpoints (/metrics, /scaling): with API keys, an admin key or
        ``METRICS_TOKEN`` (403 to a tenant's key); without, open unless METRICS_TOKEN is set."""
        token = self._config.metrics_token.get_secret_value() if self._config.metrics_token else ""
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        presented = presented.strip() if scheme.lower() == "bearer" else ""
        if token and presented and hmac.compare_digest(digest(presented), digest(token)):
            return
        if not self.tenants.keyed:
            if token:
                raise Unauthorized("this endpoint needs METRICS_TOKEN: send 'Authorization: Bearer <token>'")
            return
        _, tenant = self._authenticate(request)
        if not tenant.admin:
            raise Forbidden("an operators' endpoint: it answers admin keys and METRICS_TOKEN, not a tenant's key")

    def _authenticate(self, request: Request) -> tuple[str, Tenant]:
        if not self.tenants.keyed:
            return f"addr:{request.client.host if request.client else 'unknown'}", self.tenants.get(DEFAULT_TENANT)
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
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
            retry = max(1, int((window + 1) * 60 - now) + 1)
            setting = "RATE_LIMIT_PER_MINUTE" if tenant.name == DEFAULT_TENANT else "quota requests_per_minute"
            raise TooManyRequests(
                f"rate limit: tenant {tenant.name!r} may send {limit} requests per minute ({setting});"
                f" try again in {retry}s",
                headers={"Retry-After": str(retry)},
            )


def check_tokens(config: Config, tokens: int | None, name: str) -> None:
    """Refuse a count of tokens to generate over MAX_TOKENS_LIMIT (422, naming the field):
    for a field the job's tokens_limit does not come from (``max_tokens`` beside
    ``max_completion_tokens``, which a chat request's limit is taken from)."""
    if tokens is not None and tokens > config.max_tokens_limit:
        raise LimitExceeded(f"{name}: {tokens}; at most {config.max_tokens_limit} (MAX_TOKENS_LIMIT)")


def check_job(config: Config, job: dict[str, Any]) -> None:
    """Refuse a job that holds more than the configured limits allow (422, naming the limit)."""
    request = job.get("openai") if isinstance(job.get("openai"), dict) else job
    prompt = request.get("prompt", job.get("content"))
    texts = [prompt] if isinstance(prompt, str) else [p for p in prompt or [] if isinstance(p, str)]
    messages = request.get("messages")
    if isinstance(messages, list):
        if len(messages) > config.max_messages:
            raise LimitExceeded(f"messages: {len(messages)} messages; at most {config.max_messages} (MAX_MESSAGES)")
        for message in messages:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str):
                texts.append(content)
            elif isinstance(content, list):  # content parts: their text counts
                parts = [part for part in content if isinstance(part, dict)]
                texts += [part["text"] for part in parts if isinstance(part.get("text"), str)]
    chars = sum(len(text) for text in texts)
    if chars > config.max_prompt_chars:
        raise LimitExceeded(f"prompt: {chars} characters; at most {config.max_prompt_chars} (MAX_PROMPT_CHARS)")
    meta = job.get("meta") or {}
    stop_words = meta.get("stop_words") or []
    if len(stop_words) > config.max_stop_words:
        raise LimitExceeded(f"stop_words: {len(stop_words)} words; at most {config.max_stop_words} (MAX_STOP_WORDS)")
    longest = max((len(word) for word in stop_words), default=0)
    if longest > config.max_stop_word_chars:
        raise LimitExceeded(
            f"stop_words: a word of {longest} characters; at most {config.max_stop_word_chars} (MAX_STOP_WORD_CHARS)"
        )
    tokens = meta.get("tokens_limit")
    if tokens is not None and tokens > config.max_tokens_limit:
        raise LimitExceeded(f"tokens_limit: {tokens}; at most {config.max_tokens_limit} (MAX_TOKENS_LIMIT)")
