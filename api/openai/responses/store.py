"""A response's record in Redis (`Keys.response`): what was asked (the request's
fields a response object repeats), its own input items, the conversation it
continues (previous_response_id), and the job it runs as. Kept RESPONSE_TTL seconds
(RESULT_TTL's when 0), under the job's key: a tenant's own, as its jobs are.

A stored response (``store: true``) is kept in the file store too, with how it ended
(shared/storage/response_files.py): read from there when Redis has it no more (a
Redis that came back empty, a result expired sooner)."""

from __future__ import annotations

import time
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from api.errors import ResultStoreUnavailable
from api.openai.file_calls import in_file_store
from shared.config import Config
from shared.contract import JobStatus
from shared.contract.responses import dump_record, load_record, record_ttl
from shared.storage.response_files import KeptResponses
from shared.tenants import JOB_KEY_SEPARATOR, tenant_of


def _owner_and_id(key: str) -> tuple[str, str]:
    """The tenant and the response id of a response's key (`job_key`)."""
    return tenant_of(key), key.rpartition(JOB_KEY_SEPARATOR)[2]


class ResponseStore:
    def __init__(self, config: Config, store: aioredis.Redis, kept: KeptResponses) -> None:
        self._config = config
        self._store = store
        self._kept = kept

    @property
    def ttl(self) -> int:
        return record_ttl(self._config)

    async def save(self, key: str, record: dict[str, Any]) -> dict[str, Any]:
        """Keep `record` unless the response has one (a client's retry of the same
        request): the response's record either way."""
        name = self._config.keys.response(key)
        try:
            if not await self._store.set(name, dump_record(record), ex=self.ttl, nx=True):
                record = load_record(await self._store.get(name)) or record
        except (RedisError, OSError):
            raise ResultStoreUnavailable("result store (Redis) unavailable") from None
        if record["request"].get("store", True):
            await in_file_store(self._kept.save_record, record)
        return record

    async def load(self, key: str) -> dict[str, Any] | None:
        """The response's record: Redis's, else the file store's (None past RESPONSE_TTL)."""
        try:
            raw = await self._store.get(self._config.keys.response(key))
        except (RedisError, OSError):
            raise ResultStoreUnavailable("result store (Redis) unavailable") from None
        if raw:
            found = load_record(raw)
            # RESPONSE_TTL counts from its creation, wherever it is read from.
            return found if found and found["created_at"] + self.ttl > time.time() else None
        return await in_file_store(self._kept.record, *_owner_and_id(key))

    async def ended(self, key: str) -> dict[str, Any] | None:
        """The response's status as the file store tells it, for when Redis knows nothing
        of its job: how it ended, or queued while it has not (its job still on the
        broker, its claim lost with Redis); None when the file store has no record of it."""
        tenant, response_id = _owner_and_id(key)
        outcome = await in_file_store(self._kept.outcome, tenant, response_id)
        if outcome is not None:
            return {"result": None, "error": None, **outcome, "kept": True}
        if await in_file_store(self._kept.record, tenant, response_id) is None:
            return None
        return {"status": JobStatus.QUEUED.value, "result": None, "error": None, "finished_at": None}

    async def keep_end(self, key: str, status: dict[str, Any]) -> None:
        """Keep how the response ended (a cancellation the API made) in the file store."""
        if JobStatus(status["status"]).finished:
            outcome = {name: status.get(name) for name in ("status", "result", "error", "finished_at")}
            await in_file_store(self._kept.save_outcome, *_owner_and_id(key), outcome)

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
        await in_file_store(self._kept.delete, *_owner_and_id(key))
