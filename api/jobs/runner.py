"""Running one job: claim its id, watch for its result, queue it, await the answer."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from fastapi import HTTPException
from redis.exceptions import RedisError

from api.http.errors import (
    JobCancelled,
    JobConflict,
    JobFailed,
    JobTimedOut,
    ModelNotFound,
    QueueMismatch,
    QueueNotFound,
    ResultStoreUnavailable,
    cause,
    error_for_failure,
)
from api.jobs.queue import JobQueue
from api.jobs.result_waiter import ResultWaiter
from api.jobs.store import JobStore
from api.observability import server_timing
from api.observability.metrics import Metrics
from api.tenancy.fair_share import FairShare
from api.tenancy.guard import check_job
from api.tenancy.quotas import Quotas
from shared.config import Config
from shared.contract import (
    INTERNAL_TASKS,
    STREAM_END,
    STREAM_EXTRA,
    STREAM_INDEX,
    STREAM_TEXT,
    Job,
    JobField,
    State,
)
from shared.registry import Registry, UnknownModel, UnknownQueue
from shared.storage import redis_clients
from shared.telemetry import tracing
from shared.telemetry.logs import current_job
from shared.tenants import Tenant, job_key

log = logging.getLogger(__name__)

# A streamed answer's entries, as the worker writes them (the contract's).
INDEX, TEXT, END, EXTRA = (name.encode() for name in (STREAM_INDEX, STREAM_TEXT, STREAM_END, STREAM_EXTRA))
STREAM_POLL_MS = 200  # how long one read of a job's stream waits for a new piece


class JobRunner:
    """Queues jobs and awaits their results; one per API process."""

    def __init__(
        self,
        config: Config,
        registry: Registry,
        queue: JobQueue,
        store: JobStore,
        waiter: ResultWaiter,
        metrics: Metrics,
        redis: aioredis.Redis,
        fair: FairShare | None = None,
        notify_jobs: bool = False,
    ) -> None:
        """With `notify_jobs`, the end of a job submitted without waiting is sent to the
        webhooks that take jobs' events."""
        self._config = config
        self._registry = registry
        self._queue = queue
        self._store = store
        self._waiter = waiter
        self._metrics = metrics
        self._redis = redis
        self._quotas = Quotas(config, redis, metrics)
        self._fair = fair
        # Stream readers block in XREAD: their own pool, so they never starve the others.
        self._stream_reader = redis_clients.async_client(config, socket_connect_timeout=config.redis_connect_timeout)
        # Jobs this process published and awaits: (task, job, queue, priority, headers).
        self._published: dict[str, tuple[str, dict[str, Any], str, int | None, dict[str, str]]] = {}
        # Jobs this process refused with 503 after their claim may have been made: a
        # resend of one is queued again rather than left waiting for a job never queued.
        self._maybe_unqueued = _RecentIds(10_000)
        # Every queuing again of a job under its id passes here: bounded per job.
        self._requeues = Requeues(metrics)
        self._notify_jobs = notify_jobs
        self.awaited = 0  # jobs run() awaits now (batches' lines included)
        if not config.uses_rabbitmq:
            waiter.on_reconnect = self._requeue_unstarted

    @property
    def process(self) -> str:
        """This API process's name among all (its reply channel's)."""
        return self._waiter.reply_channel

    def key_of(self, tenant: Tenant, job_id: str) -> str:
        """The id in Redis and on the broker of the job `job_id` of `tenant`."""
        return job_key(tenant.name, job_id)

    async def cancel(self, key: str) -> str:
        """Cancel the job of that key (`key_of`), as DELETE /jobs/{id} does: "cancelled",
        "finished" or "unknown"."""
        return await self._store.cancel(key)

    async def close(self) -> None:
        """Close the stream readers' connections."""
        await self._stream_reader.aclose()

    async def submit(self, task_name: str, job_id: str, job: dict[str, Any], *, tenant: Tenant) -> None:
        """Queue the job unless its id is taken (by the tenant): by the same job (nothing
        to do) or another (409). Its end is sent to the webhooks that take jobs' events,
        when there are any."""
        notify = self._notify_jobs
        if notify:
            job = {**job, "notify": True}
        key = self.key_of(tenant, job_id)
        if await self._claim_and_queue(task_name, key, job, tenant) and notify:
            await self._store.mark_notified(key)

    async def run(
        self,
        task_name: str,
        job_id: str,
        job: dict[str, Any],
        wait: float,
        *,
        tenant: Tenant,
        resend: bool = False,
        count_timeout: bool = True,
    ) -> dict[str, Any]:
        """Queue the job (once per job_id) and return its result within `wait` seconds, or raise.

        With `resend`, a job claimed before is queued again unless it has a result (a
        batch's line driven again after the process that queued it died: its message may
        never have been sent; a second message of a job is harmless, tasks/running.py).
        Without `count_timeout`, a wait that ends before the job is not counted in the
        metrics as a failure (a batch's line, awaited a while at a time)."""
        started = time.monotonic()
        model = self.model_label(job)
        # The gateway's own jobs (llm.models) are no tenant's: one answers every tenant.
        key = job_id if task_name in INTERNAL_TASKS else self.key_of(tenant, job_id)
        self._metrics.in_flight.inc()
        self.awaited += 1
        try:
            answer = await self._run(task_name, key, job_id, job, wait, tenant, resend)
        except HTTPException as exc:
            if count_timeout or not isinstance(exc, JobTimedOut):
                self._metrics.observe_failure(model, tenant.name, cause(exc))
            raise
        finally:
            self._metrics.in_flight.dec()
            self.awaited -= 1
            self._published.pop(key, None)
        self._metrics.observe_answer(model, tenant.name, answer, time.monotonic() - started)
        server_timing.answered(model, answer.get("timing"))
        return answer

    async def _requeue_unstarted(self) -> None:
        """After the Redis server that is also the broker came back: publish again the
        awaited jobs that have not started. A message the server handed to a worker as
        it stopped never reaches the worker (Kombu's Redis transport pops it before the
        worker has it); a second message of a job that did arrive is harmless (the
        worker finds the job running or answered, tasks/running.py)."""
        try:
            unstarted = await self._unstarted(list(self._published))
        except (RedisError, OSError) as exc:
            log.warning("could not find the jobs to queue again: %s", exc)
            return
        await self._publish_again(unstarted, "job queued again after the broker restarted")

    async def find_lost(self) -> None:
        """On a Redis broker, every `JOB_LEASE` seconds: publish again each awaited job
        whose message is gone. Kombu's Redis transport pops a message from its queue,
        then records it as unacknowledged: a worker killed between the two loses the
        message. A job is lost when it has not started, has no result, its queue is
        empty, and no worker holds its message; a message in transit to a live worker
        at that moment makes a second one, which is harmless (tasks/running.py)."""
        while True:
            await asyncio.sleep(self._config.job_lease)
            try:
                await self._requeue_lost()
            except (RedisError, OSError) as exc:
                log.warning("could not look for lost jobs: %s", exc)

    async def _requeue_lost(self) -> None:
        settled = time.time() - self._config.job_lease
        queue_of = {job_id: queue for job_id, (_, job, queue, _, _) in list(self._published.items())
                    if job["accepted_at"] < settled}  # fmt: skip
        unstarted = await self._unstarted(list(queue_of))
        if not unstarted:
            return
        # A job published to its tenant's queue (a busy model's) may have been moved to
        # the model's: both are looked at.
        model_of = self._fair.model_queue if self._fair is not None else (lambda queue: queue)
        queues = sorted({q for job_id in unstarted for q in (queue_of[job_id], model_of(queue_of[job_id]))})
        depths = await asyncio.get_running_loop().run_in_executor(None, self._queue.depths, queues)
        # A job whose queue still holds messages may be one of them: only those of empty
        # queues are looked for among the messages workers hold.
        candidates = [job_id for job_id in unstarted
                      if depths.get(queue_of[job_id]) == 0 and depths.get(model_of(queue_of[job_id])) == 0]  # fmt: skip
        if not candidates:
            return
        held = await self._held_by_workers()
        lost = [job_id for job_id in candidates if job_id not in held]
        await self._publish_again(lost, "job queued again: its message was lost between the broker and a worker")

    async def queue_again_if_lost(self, task_name: str, job_id: str, job: dict[str, Any], *, tenant: Tenant) -> bool:
        """For a job awaited again and again (a batch's line): on a Redis broker, queue it
        again when its message is gone (as `find_lost` does for the jobs a request awaits):
        it has not started, its queue is empty, and no worker holds its message. True
        when it was queued again."""
        key = self.key_of(tenant, job_id)
        if self._config.uses_rabbitmq or not await self._unstarted([key]):
            return False
        routed, queue = self._route(job)
        depths = await asyncio.get_running_loop().run_in_executor(None, self._queue.depths, [queue])
        if depths.get(queue) != 0 or key in await self._held_by_workers():
            return False
        if not self._requeues.allow(key, "lost"):
            return False
        sent = {**routed, "tenant": tenant.name, "accepted_at": time.time(),
                "reply_to": self._waiter.reply_channel}  # fmt: skip
        await self._queue.submit(task_name, key, sent, queue, _priority(routed))
        log.warning("job queued again: its message was lost between the broker and a worker",
                    extra={"job_id": key, "queue": queue})  # fmt: skip
        return True

    async def _unstarted(self, job_ids: list[str]) -> list[str]:
        """Those of `job_ids` that have neither started nor a result."""
        if not job_ids:
            return []
        keys = self._config.keys
        pipe = self._redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hexists(keys.job(job_id), JobField.STARTED_AT).exists(keys.result(job_id))
        flags = await pipe.execute()
        return [job_id for job_id, started, answered in zip(job_ids, flags[::2], flags[1::2], strict=True)
                if not started and not answered]  # fmt: skip

    async def _held_by_workers(self) -> set[str]:
        """The jobs whose messages workers hold (Kombu's unacknowledged messages)."""
        held = set()
        async for _, value in self._redis.hscan_iter(self._config.keys.unacked):
            try:
                held.add(json.loads(value)[0]["headers"]["id"])
            except (ValueError, LookupError, TypeError):
                continue
        return held

    async def _publish_again(self, job_ids: list[str], why: str) -> None:
        for job_id in job_ids:
            entry = self._published.get(job_id)
            if entry is None:  # answered meanwhile
                continue
            task_name, job, queue, priority, headers = entry
            if not self._requeues.allow(job_id, "broker"):
                continue
            try:
                await self._queue.submit(task_name, job_id, job, queue, priority, headers)
                log.warning(why, extra={"job_id": job_id, "queue": queue})
            except HTTPException as exc:
                log.warning("could not queue job %s again: %s", job_id, exc.detail)

    def meta_for_queue(self, queue_name: str, meta: dict[str, Any]) -> dict[str, Any]:
        """`meta` of a job sent with ``?queue_name=`` (ProtoLLM's SDK): naming the model
        served from that queue. 404 for a queue no model is served from; 422 when
        `meta.model` names a model of another queue."""
        try:
            model = self._registry.by_queue(queue_name, self._config.queue_name)
        except UnknownQueue as exc:
            raise QueueNotFound(str(exc)) from None
        requested = meta.get("model")
        if not requested:
            named = not self._registry.passthrough and model is not self._registry.default
            return {**meta, "model": model.name} if named else meta
        try:
            chosen = self._registry.route(requested)
        except UnknownModel as exc:
            raise ModelNotFound(str(exc)) from None
        if chosen.queue != model.queue and chosen is not model:
            raise QueueMismatch(
                f"queue_name {queue_name!r} is model {model.name!r}'s queue, but meta.model asks for"
                f" {requested!r} (queue {chosen.queue!r}); give one of them, or both naming the same model"
            )
        return meta

    def model_label(self, job: dict[str, Any]) -> str:
        """The model a job is for, as metrics name it: the registry's name (one model
        server without a registry: its name, whatever name a request gives), or
        "unknown". Never a name a client made up: every name is a series more."""
        meta = job.get("meta")
        requested = meta.get("model") if isinstance(meta, dict) else None
        try:
            return self._registry.route(requested).name
        except UnknownModel:
            return "unknown"

    async def _run(
        self,
        task_name: str,
        key: str,
        job_id: str,
        job: dict[str, Any],
        wait: float,
        tenant: Tenant,
        resend: bool = False,
    ) -> dict[str, Any]:
        async with self._waiter.expect(key) as result:
            # Listening before queuing, so the result cannot be missed; a job_id
            # queued before (a retry, or a duplicate from another API process) is
            # not queued again, and its result may already be stored.
            if resend:
                self._maybe_unqueued.add(key)
            if not await self._claim_and_queue(task_name, key, job, tenant, awaited=True):
                await self._waiter.follow(key)
            try:
                with tracing.span("await result", attributes={"llm.job_id": key}):
                    meta = await asyncio.wait_for(asyncio.shield(result), wait)
            except TimeoutError:
                raise JobTimedOut(
                    f"job {job_id} did not finish within {wait:g}s; it is still queued or running:"
                    f" its status and result are at /jobs/{job_id}",
                    headers={"Location": f"{self._config.public_base_url}/jobs/{job_id}"},
                ) from None
        return outcome(job_id, meta)

    async def stream(
        self, task_name: str, job_id: str, job: dict[str, Any], *, tenant: Tenant
    ) -> AsyncIterator[dict[str, Any]]:
        """Queue the job (once per job_id) and yield its answer as it is produced.

        Yields ``{"accepted": True}`` once the job is queued (errors before that are
        raised as usual), then ``{"index", "text"}`` per piece, then ``{"end": result}``.
        A job that fails raises its HTTP error from the iteration.
        """
        key = self.key_of(tenant, job_id)
        stream_key = self._config.keys.stream(key)
        async with self._waiter.expect(key) as result:
            if not await self._claim_and_queue(task_name, key, {**job, "stream": True}, tenant, reply=True):
                await self._waiter.follow(key)
            yield {"accepted": True}
            # Not the current span: the stream is read in another task than the one that began it.
            awaiting = tracing.start("await stream", {"llm.job_id": key})
            try:
                last = "0-0"  # from the start: a late or returning reader misses nothing
                while True:
                    try:
                        entries = await self._stream_reader.xread({stream_key: last}, block=STREAM_POLL_MS, count=256)
                    except (RedisError, OSError):
                        raise ResultStoreUnavailable("result store (Redis) unavailable") from None
                    for _, items in entries:
                        for entry_id, fields in items:
                            last = entry_id
                            if END in fields:
                                answer = json.loads(fields[END])
                                self._stream_ended(job, answer)
                                yield {"end": answer}
                                return
                            piece = {"index": int(fields[INDEX]), "text": fields[TEXT].decode()}
                            if EXTRA in fields:
                                piece["extra"] = json.loads(fields[EXTRA])
                            yield piece
                    if not entries and result.done():
                        # Finished without an end entry: it failed or was cancelled (raised
                        # here), or it ran unstreamed (a job_id sent before without stream).
                        answer = outcome(job_id, result.result())
                        for choice in answer.get("choices") or [{"index": 0, "content": answer["content"]}]:
                            yield {"index": choice["index"], "text": choice["content"]}
                        self._stream_ended(job, answer)
                        yield {"end": answer}
                        return
            finally:
                if awaiting is not None:
                    awaiting.end()

    def _stream_ended(self, job: dict[str, Any], answer: dict[str, Any]) -> None:
        # A stream's parts are counted as it ends: its headers left before they were known.
        timing = server_timing.current.get()
        if timing is not None:
            timing.answered(self.model_label(job), answer.get("timing"))
            timing.observe(self._metrics, time.perf_counter())

    def _route(self, job: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """The job as its model's workers take it, and its model's queue (404 for a
        model the registry does not list)."""
        meta = job.get("meta")
        if not isinstance(meta, dict):  # the gateway's own jobs (llm.models)
            return job, self._registry.default.queue
        try:
            model = self._registry.route(meta.get("model"))
        except UnknownModel as exc:
            raise ModelNotFound(str(exc)) from None
        if self._registry.passthrough:
            return job, model.queue
        served = model.served_name or model.name
        return {**job, "meta": {**meta, "model": served}, "route": model.name}, model.queue

    async def _claim_and_queue(
        self,
        task_name: str,
        job_id: str,
        job: dict[str, Any],
        tenant: Tenant,
        awaited: bool = False,
        reply: bool = False,
    ) -> bool:
        """True when this request claimed the job_id and queued the job. With `reply`
        (or `awaited`), its result is published on this process's channel; `awaited`
        also remembers it until run() ends, to queue it again if need be."""
        current_job.set({"job_id": job_id, "tenant": tenant.name})  # on each line logged about this request
        check_job(self._config, job)
        job, queue = self._route(job)
        # Its model as logs and spans name it, as the worker does: the registry's name, or
        # without a registry the name the request gave (not a metric label: any name).
        meta = job.get("meta") if isinstance(job.get("meta"), dict) else {}
        model = job.get("route") or meta.get("model") or self._registry.default.name
        job = {**job, "tenant": tenant.name}
        current_job.set({"job_id": job_id, "model": model, "queue": queue, "tenant": tenant.name})
        # What the workers will parse: a job they would refuse is this process's bug (500).
        Job.parse(job)
        # A job awaited here has its result published on this process's channel.
        reply_to = self._waiter.reply_channel if awaited or reply else ""
        # A model's job counts to its tenant's quotas; the gateway's own (llm.models) does not.
        for_model = isinstance(job.get("meta"), dict)
        if for_model:
            await self._quotas.admit(tenant, job_id)
        try:
            claim = await self._store.claim(job_id, task_name, job, reply_to, tenant.name, queue)
        except ResultStoreUnavailable:
            # Redis may have made the claim and lost its answer: the job may stand claimed
            # without having been queued.
            self._maybe_unqueued.add(job_id)
            raise
        except HTTPException:  # the queue is full
            await self._quotas.release(tenant, job_id)
            raise
        if not claim.same:
            raise JobConflict(f"job_id {job_id!r} is already used by a job with another body")
        if not claim.new and job_id not in self._maybe_unqueued:
            return False
        # Queued by this request; or claimed by a request of this process that was refused
        # (503) and maybe never queued: queued now, and a second message of a job that was
        # queued after all is harmless (tasks/running.py).
        retaken = not claim.new
        self._maybe_unqueued.discard(job_id)
        if retaken and not self._requeues.allow(job_id, "resent"):
            return False
        try:
            # When it was accepted, for its time in the queue (not part of its fingerprint).
            priority = _priority(job)
            sent = {**job, "accepted_at": time.time()}
            if reply_to:
                sent["reply_to"] = reply_to
            # A busy model's jobs wait their tenant's turn (not a batch's lines: they are
            # bounded, and below everything else already).
            if self._fair is not None and for_model and "batch" not in job:
                queue = self._fair.route(queue, tenant.name)
            tracing.annotate(job_id=job_id, model=model, tenant=tenant.name)
            with tracing.span(f"publish {queue}", tracing.PRODUCER, _span_attributes(job_id, model, queue)):
                # The trace's context travels in the message's headers: a redelivered job joins it.
                headers = tracing.inject()
                await self._queue.submit(task_name, job_id, sent, queue, priority, headers)
            if awaited:
                self._published[job_id] = (task_name, sent, queue, priority, headers)
            log.debug("job queued")
        except HTTPException:
            # Not queued: a retry with this job_id must queue it.
            if retaken or not await self._store.release(job_id):
                self._maybe_unqueued.add(job_id)
            else:
                await self._quotas.release(tenant, job_id)
            raise
        # A job queued again under an earlier claim may have run: its result is followed.
        return not retaken


def _span_attributes(job_id: str, model: str, queue: str) -> dict[str, str]:
    return {"llm.job_id": job_id, "llm.model": model, "messaging.destination.name": queue,
            "messaging.system": "celery"}  # fmt: skip


def _priority(job: dict[str, Any]) -> int | None:
    """The priority a job's ``meta`` gives (0 batch .. 9 most urgent), or None."""
    meta = job.get("meta") if isinstance(job.get("meta"), dict) else {}
    priority = meta.get("priority")
    return priority if isinstance(priority, int) else None


# How often one API process queues one job again under its id: each time is a message
# more on its model's queue, so a loop that kept doing it would flood the queue.
MAX_REQUEUES = 10


class Requeues:
    """Counts each job queued again under its id, and refuses past MAX_REQUEUES (logged
    and counted: ``llm_api_jobs_requeued{reason, refused}``)."""

    def __init__(self, metrics: Metrics, size: int = 10_000) -> None:
        self._metrics = metrics
        self._counts: dict[str, int] = {}
        self._size = size

    def allow(self, key: str, reason: str) -> bool:
        """Whether the job of `key` may be queued again now (counted when it may)."""
        count = self._counts.pop(key, 0) + 1
        self._counts[key] = count
        if len(self._counts) > self._size:
            del self._counts[next(iter(self._counts))]
        refused = count > MAX_REQUEUES
        self._metrics.requeues.labels(reason, "true" if refused else "false").inc()
        if refused:
            log.error(
                "job not queued again: queued again %d times already by this process (at most %d)",
                count - 1, MAX_REQUEUES, extra={"job_id": key, "reason": reason},
            )  # fmt: skip
        return not refused


class _RecentIds:
    """A set of the most recent `size` ids added (the oldest forgotten first)."""

    def __init__(self, size: int) -> None:
        self._ids: dict[str, None] = {}
        self._size = size

    def add(self, job_id: str) -> None:
        self._ids.pop(job_id, None)
        self._ids[job_id] = None
        if len(self._ids) > self._size:
            del self._ids[next(iter(self._ids))]

    def discard(self, job_id: str) -> None:
        self._ids.pop(job_id, None)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._ids


def outcome(job_id: str, meta: dict[str, Any]) -> dict[str, Any]:
    """The result of a finished job, or the HTTP error it ended with."""
    status = meta.get("status")
    result = meta.get("result")
    if status == State.SUCCESS and isinstance(result, dict):
        return result
    if status == State.REVOKED:
        raise JobCancelled(f"job {job_id} was cancelled")
    if status == State.FAILURE and isinstance(result, dict):
        exc_type = str(result.get("exc_type", "Exception"))
        args = result.get("exc_message")
        error: HTTPException = error_for_failure(exc_type, args if isinstance(args, list) else [args])
        log.info("job %s failed: %s: %s", job_id, exc_type, error.detail)
        raise error
    raise JobFailed(f"job {job_id} ended with an unreadable result ({status})")
