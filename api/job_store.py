"""Jobs in Redis: the atomic claim of a job_id, and a job's status.

Keys (all under ``REDIS_PREFIX:``, all with a TTL):
  job:{id}                 hash: fingerprint of the request, task, accepted_at, started_at, cancelled_at,
                           reply_to (the channel of the API process awaiting it)
  queued                   sorted set: accepted jobs not yet started, scored by accepted_at
  celery-task-meta-{id}    the result, written by the worker (Celery's result backend),
                           or by DELETE /jobs/{id} for a cancelled job
  cancel                   pub/sub channel: ids of cancelled jobs, for the workers
  replies:{process}        pub/sub channel: results of the jobs an API process queued and awaits
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from api.errors import QueueFull, ResultStoreUnavailable, error_for_failure
from gateway.config import Config

# Claims job_id for this request unless it is claimed already; returns the
# fingerprint of the request that claimed it first, or nil when this one did; or
# {'full', n} when n jobs wait to start already (ARGV[6], MAX_QUEUED_JOBS): the
# claim is refused. Entries older than a claim's TTL are dropped from the count.
# ARGV[7], when not empty, is the channel the job's result is also published on.
CLAIM = """
local existing = redis.call('HGET', KEYS[1], 'fingerprint')
if existing then return existing end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(ARGV[3]) - tonumber(ARGV[4]))
local waiting = redis.call('ZCARD', KEYS[2])
if waiting >= tonumber(ARGV[6]) then return {'full', waiting} end
redis.call('HSET', KEYS[1], 'fingerprint', ARGV[1], 'task', ARGV[2], 'accepted_at', ARGV[3])
if ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'reply_to', ARGV[7]) end
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return false
"""

# Cancels a job unless it has a result already: marks it, takes it out of the
# queued set, stores and publishes its cancelled result (on the job's channel and
# its API process's: waiting requests get their answer at once), and names it on
# the cancel channel (so a worker running
# it stops). Answers "unknown", "finished" or "cancelled".
CANCEL = """
if redis.call('EXISTS', KEYS[3]) == 1 then return 'finished' end
if redis.call('EXISTS', KEYS[1]) == 0 then return 'unknown' end
redis.call('HSET', KEYS[1], 'cancelled_at', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[3])
redis.call('SET', KEYS[3], ARGV[4], 'EX', ARGV[5])
redis.call('PUBLISH', KEYS[3], ARGV[4])
local reply_to = redis.call('HGET', KEYS[1], 'reply_to')
if reply_to then redis.call('PUBLISH', reply_to, ARGV[4]) end
redis.call('PUBLISH', KEYS[4], ARGV[3])
return 'cancelled'
"""

QUEUE_FULL_RETRY_AFTER = 2  # seconds a refused client is asked to wait

STATES = {"SUCCESS": "succeeded", "FAILURE": "failed", "REVOKED": "cancelled"}


def fingerprint(task_name: str, job: dict[str, Any]) -> str:
    """What makes two requests the same job: the task and the body, canonically.

    Whether the answer is streamed is not part of it: a job asked for again may be
    streamed or not, whichever way it first ran."""
    same = {key: value for key, value in job.items() if key not in ("stream", "accepted_at")}
    canonical = json.dumps([task_name, same], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass
class Claim:
    """Outcome of claiming a job_id: new, the same job again, or another job's id."""

    new: bool
    same: bool


def _iso(seconds: float | str | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(float(seconds), UTC).isoformat()


class JobStore:
    """Claims and reads jobs; shares the API's Redis client."""

    def __init__(self, config: Config, store: aioredis.Redis) -> None:
        self._config = config
        self._store = store
        self._claim = store.register_script(CLAIM)
        self._cancel = store.register_script(CANCEL)

    async def claim(self, job_id: str, task_name: str, job: dict[str, Any], reply_to: str = "") -> Claim:
        """Claim `job_id` for this request, atomically across API processes; its result
        will be published on `reply_to` too, when given."""
        mine = fingerprint(task_name, job)
        keys = [self._config.job_key(job_id), self._config.queued_key]
        config = self._config
        args = [mine, task_name, repr(time.time()), config.job_ttl, job_id, config.max_queued_jobs, reply_to]
        try:
            first = await self._claim(keys=keys, args=args)
        except (RedisError, OSError):
            raise ResultStoreUnavailable("result store (Redis) unavailable") from None
        if isinstance(first, list):
            raise QueueFull(
                f"queue full: {first[1]} jobs waiting to start, at most {config.max_queued_jobs} (MAX_QUEUED_JOBS);"
                f" try again in {QUEUE_FULL_RETRY_AFTER}s",
                headers={"Retry-After": str(QUEUE_FULL_RETRY_AFTER)},
            )
        if first is None:
            return Claim(new=True, same=True)
        return Claim(new=False, same=first.decode() == mine)

    async def release(self, job_id: str) -> None:
        """Forget a claim whose job could not be queued, so a retry can queue it."""
        async with self._store.pipeline(transaction=False) as pipe:
            pipe.delete(self._config.job_key(job_id)).zrem(self._config.queued_key, job_id)
            with contextlib.suppress(RedisError, OSError):  # else it expires with its TTL
                await pipe.execute()

    async def cancel(self, job_id: str) -> str:
        """Cancel the job: "cancelled", or "finished" (it has a result) or "unknown"."""
        config = self._config
        now = time.time()
        # The cancelled result, in the format Celery's result backend writes.
        meta = {
            "status": "REVOKED",
            "result": {"exc_type": "TaskRevokedError", "exc_message": ["cancelled"], "exc_module": "celery.exceptions"},
            "traceback": None,
            "children": [],
            "date_done": datetime.fromtimestamp(now, UTC).isoformat(),
            "task_id": job_id,
        }
        keys = [config.job_key(job_id), config.queued_key, config.result_key(job_id), config.cancel_channel]
        args = [repr(now), config.job_ttl, job_id, json.dumps(meta), config.result_ttl]
        try:
            answer = await self._cancel(keys=keys, args=args)
        except (RedisError, OSError):
            raise ResultStoreUnavailable("result store (Redis) unavailable") from None
        return answer.decode() if isinstance(answer, bytes) else str(answer)

    async def status(self, job_id: str) -> dict[str, Any] | None:
        """The job's status, or None when it is unknown or expired."""
        config = self._config
        try:
            async with self._store.pipeline(transaction=False) as pipe:
                pipe.hgetall(config.job_key(job_id)).get(config.result_key(job_id)).zrank(config.queued_key, job_id)
                claim, raw_result, rank = await pipe.execute()
        except (RedisError, OSError):
            raise ResultStoreUnavailable("result store (Redis) unavailable") from None
        if not claim and raw_result is None:
            return None
        fields = {k.decode(): v.decode() for k, v in claim.items()}
        meta = json.loads(raw_result) if raw_result else {}
        state = STATES.get(meta.get("status", ""))
        answer: dict[str, Any] = {
            "job_id": job_id,
            "status": state or ("running" if "started_at" in fields else "queued"),
            "accepted_at": _iso(fields.get("accepted_at")),
            "started_at": _iso(fields.get("started_at")),
            "finished_at": meta.get("date_done") if state else None,
            "queue_position": rank + 1 if rank is not None and not state and "started_at" not in fields else None,
            "result": meta.get("result") if state == "succeeded" else None,
            "error": None,
        }
        if state == "failed":
            failure = meta.get("result") or {}
            args = failure.get("exc_message")
            error = error_for_failure(str(failure.get("exc_type")), args if isinstance(args, list) else [args])
            answer["error"] = {
                "type": failure.get("exc_type"),
                "message": error.detail,
                "status_code": error.status_code,
            }
        return answer
