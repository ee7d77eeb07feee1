"""A response's record in Redis (`Keys.response`): what was asked (the request's
fields a response object repeats), its own input items, the conversation it
continues (previous_response_id), and the job it runs as. Kept RESPONSE_TTL seconds
(RESULT_TTL's when 0), under the job's key: a tenant's own, as its jobs are."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from api.errors import ResultStoreUnavailable
from shared.config import Config
from shared.contract.responses import dump_record, load_record, record_ttl


class ResponseStore:
    def __init__(self, config: Config, store: aioredis.Redis) -> None:
        self._config = config
        self._store = store

    @property
    def ttl(self) -> int:
        return record_ttl(self._config)

    async def save(self, key: str, record: dict[str, Any]) -> dict[str, Any]:
        """Keep `record` unless the response has one (a client's retry of the same
        request): the response's record either way."""
        name = self._config.keys.response(key)
        try:
            if await self._store.set(name, dump_record(record), ex=self.ttl, nx=True):
                return record
            kept = await self._store.get(name)
        except (RedisError, OSError):
            raise ResultStoreUnavailable("result store (Redis) unavailable") from None
        found = load_record(kept)
        return record if found is None else found

    async def load(self, key: str) -> dict[str, Any] | None:
        try:
            raw = await self._store.get(self._config.keys.response(key))
        except (RedisError, OSError):
            raise ResultStoreUnavailable("result store (Redis) unavailable") from None
        return load_record(raw)

    async def forget(self, key: str) -> None:
        """Everything the response left: its record, its job's claim, result and stream.
        Its place among its tenant's jobs in flight was freed as its job ended (STORE_ONCE,
        CANCEL), whatever is deleted here."""
        keys = self._config.keys
        try:
            async with self._store.pipeline(transaction=False) as pipe:
                pipe.delete(keys.response(key), keys.result(key), keys.stream(key), keys.job(key))
                pipe.zrem(keys.queued, key)
                await pipe.execute()
        except (RedisError, OSError):
            raise ResultStoreUnavailable("result store (Redis) unavailable") from None
