"""Jobs in Redis: the atomic claim of a job_id, and a job's status.

The keys and the scripts are the contract's (shared/contract/): a job's hash,
the set of queued jobs, its result, the cancel channel, each API process's replies.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from api.errors import QueueFull, ResultStoreUnavailable
from shared.config import Config
from shared.contract import (
    CANCEL,
    CLAIM,
    MARK_NOTIFIED,
    STATUS_NAMES,
    CancelOutcome,
    JobField,
    JobStatus,
    cancelled_result,
    failure_status,
    kept_claim,
    whole_answer,
)
from shared.storage import redis_clients
from shared.tenants import tenant_of

log = logging.getLogger(__name__)

QUEUE_FULL_RETRY_AFTER = 2  # seconds a refused client is asked to wait


def fingerprint(task_name: str, job: dict[str, Any]) -> str:
    """What makes two requests the same job: the task and the body, canonically.

    Whether the answer is streamed is not part of it: a job asked for again may be
    streamed or not, whichever way it first ran; nor is a response's record (its time)."""
    same = {key: value for key, value in job.items()
            if key not in ("stream", "accepted_at", "notify", "tenant", "weight", "record", "key_id")}  # fmt: skip
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
        self._mark_notified = store.register_script(MARK_NOTIFIED)
        self._replicated = bool(config.sentinels and config.redis_replica_acks)

    async def claim(
        self,
        job_id: str,
        task_name: str,
        job: dict[str, Any],
        reply_to: str = "",
        tenant: str = "",
        queue: str = "",
        background: bool = False,
        priority: int | None = None,
    ) -> Claim:
        """Claim `job_id` for this request, atomically across API processes; its result
        will be published on `reply_to` too, when given. `tenant` is whose job it is,
        `queue` its model's; `background`, queued without a request awaiting it;
        `priority` its own (None: the default)."""
        mine = fingerprint(task_name, job)
        # An ended job's claim is kept in its result (STORE_ONCE): CLAIM reads it there.
        keys = [self._config.keys.job(job_id), self._config.keys.queued, self._config.keys.result(job_id)]
        config = self._config
        args = [
            mine,
            task_name,
            repr(time.time()),
            config.job_ttl,
            job_id,
            config.max_queued_jobs,
            reply_to,
            # Kept only where the job's key does not say it (`tenant_of`: a key names its
            # tenant, the default tenant's by naming none).
            tenant if tenant != tenant_of(job_id) else "",
            queue,
            "1" if background else "",
            "" if priority is None else str(priority),
        ]
        try:
            first = await self._claim_replicated(keys, args)
        except (RedisError, OSError):
            raise ResultStoreUnavailable("result store (Redis) unavailable") from None
        if isinstance(first, list):
            raise QueueFull(
                f"queue full: {first[1]} jobs waiting to start, at most {config.max_queued_jobs} (MAX_QUEUED_JOBS);"
                f" try again in {QUEUE_FULL_RETRY_AFTER}s",
                retry_after=QUEUE_FULL_RETRY_AFTER,
            )
        if first is None:
            return Claim(new=True, same=True)
        return Claim(new=False, same=first.decode() == mine)

    async def _claim_replicated(self, keys: list[str], args: list[Any]) -> Any:
        """CLAIM; with Sentinels, on the replicas too before the job counts as accepted."""
        if not self._replicated:
            return await self._claim(keys=keys, args=args)
        async with self._store.pipeline(transaction=False) as pipe:
            await self._claim(keys=keys, args=args, client=pipe)
            redis_clients.wait_for_replicas(pipe, self._config)
            first, acks = await pipe.execute()
        redis_clients.check_replicas(acks, self._config)
        return first

    async def release(self, job_id: str) -> bool:
        """Forget a claim whose job could not be queued, so a retry can queue it; False
        when Redis could not be reached (the claim stays, until its TTL)."""
        async with self._store.pipeline(transaction=False) as pipe:
            pipe.delete(self._config.keys.job(job_id)).zrem(self._config.keys.queued, job_id)
            try:
                await pipe.execute()
            except (RedisError, OSError):
                return False
        return True

    async def mark_notified(self, job_id: str) -> None:
        """Remember that the job's end is sent to webhooks (its cancellation by the API);
        a job that ended already is left as it is (its claim is in its result)."""
        try:
            await self._mark_notified(keys=[self._config.keys.job(job_id)])
        except (RedisError, OSError) as exc:
            log.warning("could not mark job %s for webhooks: %s", job_id, exc)

    async def notified(self, job_id: str) -> bool:
        """Whether the job's end is sent to webhooks."""
        try:
            return bool(await self._store.hexists(self._config.keys.job(job_id), JobField.NOTIFY))
        except (RedisError, OSError):
            return False

    async def cancel(self, job_id: str) -> CancelOutcome:
        """Cancel the job; what came of it."""
        config = self._config
        now = time.time()
        keys = [config.keys.job(job_id), config.keys.queued, config.keys.result(job_id), config.keys.cancel,
                config.keys.in_flight(tenant_of(job_id))]  # fmt: skip
        args = [repr(now), config.job_ttl, job_id, cancelled_result(job_id, now), config.result_ttl]
        try:
            answer = await self._cancel(keys=keys, args=args)
        except (RedisError, OSError):
            raise ResultStoreUnavailable("result store (Redis) unavailable") from None
        return CancelOutcome(answer.decode() if isinstance(answer, bytes) else str(answer))

    async def background(self, job_id: str) -> bool:
        """Whether the job was queued in the background (no request awaited it); True
        when Redis cannot say: a job is not cancelled on a guess."""
        try:
            return bool(await self._store.hexists(self._config.keys.job(job_id), JobField.BACKGROUND))
        except (RedisError, OSError):
            return True

    async def readers(self, job_id: str) -> int:
        """How many clients read the job's stream now (1 when Redis cannot say)."""
        try:
            return int(await self._store.get(self._config.keys.stream_readers(job_id)) or 0)
        except (RedisError, OSError):
            return 1

    async def status(self, job_id: str) -> dict[str, Any] | None:
        """The job's status, or None when it is unknown or expired."""
        config = self._config
        try:
            async with self._store.pipeline(transaction=False) as pipe:
                pipe.hgetall(config.keys.job(job_id)).get(config.keys.result(job_id)).zrank(config.keys.queued, job_id)
                claim, raw_result, rank = await pipe.execute()
        except (RedisError, OSError):
            raise ResultStoreUnavailable("result store (Redis) unavailable") from None
        if not claim and raw_result is None:
            return None
        meta = json.loads(raw_result) if raw_result else {}
        # An ended job's claim is in its result (its hash gone); stored by a worker of an
        # earlier release, in its hash still.
        fields = {**kept_claim(meta), **{k.decode(): v.decode() for k, v in claim.items()}}
        state = STATUS_NAMES.get(meta.get("status", ""))
        answer: dict[str, Any] = {
            "job_id": job_id,
            # A job sent from Python, without the API's claim: whose its key says.
            "tenant": fields.get(JobField.TENANT) or tenant_of(job_id),
            "status": state or (JobStatus.RUNNING if JobField.STARTED_AT in fields else JobStatus.QUEUED),
            "accepted_at": _iso(fields.get(JobField.ACCEPTED_AT)),
            "started_at": _iso(fields.get(JobField.STARTED_AT)),
            "finished_at": meta.get("date_done") if state else None,
            "queue_position": rank + 1 if rank is not None and not state and "started_at" not in fields else None,
            "result": whole_answer(meta.get("result")) if state == JobStatus.SUCCEEDED else None,
            "error": None,
        }
        if state == JobStatus.FAILED:
            failure = meta.get("result") or {}
            args = failure.get("exc_message")
            module = str(failure.get("exc_module") or "")
            status, message = failure_status(
                str(failure.get("exc_type")), args if isinstance(args, list) else [args], module
            )
            answer["error"] = {"type": failure.get("exc_type"), "message": message, "status_code": status}
        return answer
