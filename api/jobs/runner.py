"""Running one job, given its route: admit it, watch for its result, queue it, await the
answer (whole, or streamed piece by piece).

The order matters: the result is watched for before the job is queued, so that it
cannot be missed; a job whose key was claimed before (a retry, or the same request to
another API process) is not queued again but followed to its answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import redis.asyncio as aioredis

from api.errors import GatewayError, JobTimedOut, ResultStoreUnavailable, cause
from api.jobs.admission import Admission
from api.jobs.answers import outcome, read_stream
from api.jobs.queue import JobQueue
from api.jobs.requeues import Published, PublishedJob, RecentIds, Requeues
from api.jobs.result_waiter import ResultWaiter
from api.jobs.route import JobRoute
from api.jobs.store import JobStore
from api.observability.metrics import Metrics
from api.tenancy.fair_share import FairShare
from shared.config import Config
from shared.contract import CancelOutcome, JobStatus
from shared.storage import redis_clients
from shared.telemetry import tracing
from shared.telemetry.logs import current_job

log = logging.getLogger(__name__)


class JobRunner:
    """Queues jobs and awaits their results; one per API process."""

    def __init__(
        self,
        config: Config,
        admission: Admission,
        store: JobStore,
        queue: JobQueue,
        waiter: ResultWaiter,
        fair: FairShare,
        metrics: Metrics,
        published: Published,
        requeues: Requeues,
        stream_reader: aioredis.Redis,
        notify_jobs: bool = False,
    ) -> None:
        """`stream_reader` reads answers' streams (blocking reads: a pool of its own, so
        they never starve the other commands). With `notify_jobs`, the end of a job
        submitted without waiting is sent to the webhooks that take jobs' events."""
        self._config = config
        self._admission = admission
        self._store = store
        self._queue = queue
        self._waiter = waiter
        self._fair = fair
        self._metrics = metrics
        self._published = published
        self._requeues = requeues
        self._stream_reader = stream_reader
        self._notify_jobs = notify_jobs
        # Jobs this process refused with 503 after their claim may have been made: a
        # resend of one is queued again rather than left waiting for a job never queued.
        self._maybe_unqueued = RecentIds(10_000)
        self._awaiting = 0
        self._leaving: set[asyncio.Task[None]] = set()
        # Streams' reads take turns for the readers' pool's connections: a reader that
        # read goes behind those waiting (asyncio's semaphore is first come, first served).
        self._read_turns = asyncio.Semaphore(redis_clients.STREAM_READERS)

    @property
    def awaiting(self) -> int:
        """Jobs this process awaits now (batches' lines included)."""
        return self._awaiting

    @property
    def reply_channel(self) -> str:
        """Where the results of the jobs this process awaits are published."""
        return self._waiter.reply_channel

    async def cancel(self, key: str) -> CancelOutcome:
        """Cancel the job of that key, as DELETE /jobs/{id} does; what came of it."""
        return await self._store.cancel(key)

    async def _reader_left(self, route: JobRoute, token: str, cancels: bool) -> None:
        """A client stopped reading the job's stream. When it `cancels` (a foreground
        stream's own request, left before the end) and no one else reads the stream, the
        job is cancelled after STREAM_LEAVE_GRACE seconds unless a client came back for
        it (Last-Event-ID) in the meantime, on any API process; never a job queued in the
        background (a background response): it runs until it ends or is cancelled."""
        left = await self._admission.leave_stream(route, token)
        if not cancels or left > 0:
            return
        key = route.key
        grace = self._config.stream_leave_grace
        if grace > 0:
            await asyncio.sleep(grace)
            if await self._store.readers(key) > 0:
                return
        if await self._store.background(key):
            return
        try:
            cancelled = await self.cancel(key) == CancelOutcome.CANCELLED
        except GatewayError as exc:  # Redis away: the job runs on, as if a reader had stayed
            log.warning("job %s not cancelled after its stream's reader left: %s", key, exc)
            return
        if cancelled:
            log.info("job %s cancelled: its stream's reader left and did not come back", key)

    def _leave_later(self, route: JobRoute, token: str, cancels: bool) -> None:
        # A task of its own: the reader's own task may be cancelled (its client gone).
        self._later(self._reader_left(route, token, cancels))

    def close_later(self, events: AsyncIterator[Any]) -> None:
        """Close a stream's `events` (from `stream`) in a task of their own, held until it
        ends: the reader's task may be cancelled (its client gone) as its response ends."""
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            self._later(aclose())

    def _later(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._leaving.add(task)
        task.add_done_callback(self._leaving.discard)

    async def submit(self, route: JobRoute, job: dict[str, Any], notify: bool | None = None) -> None:
        """Queue the job unless its key is taken: by the same job (nothing to do) or
        another (409). Its end is sent to the webhooks that take jobs' events, when
        there are any (`notify`: to those that take its events, whichever they are)."""
        job, notify = self._notified(job, notify)
        # On a Redis broker, remembered until it is answered: its message may be lost
        # (api/jobs/recovery.py), and no request awaits it to notice.
        remember = not self._config.uses_rabbitmq
        if await self._claim_and_queue(route, job, remember=remember, background=True) and notify:
            await self._store.mark_notified(route.key)

    def _notified(self, job: dict[str, Any], notify: bool | None) -> tuple[dict[str, Any], bool]:
        """A job queued in the background, marked for the webhooks when its end is sent to
        them (`notify`; None: when there are webhooks for jobs' events)."""
        notify = self._notify_jobs if notify is None else notify
        return ({**job, "notify": True} if notify else job), notify

    async def run(
        self,
        route: JobRoute,
        job: dict[str, Any],
        wait: float,
        *,
        resend: bool = False,
        count_timeout: bool = True,
        queued: Callable[[], Awaitable[None]] | None = None,
    ) -> dict[str, Any]:
        """Queue the job (once per key) and return its result within `wait` seconds, or raise:
        the answer with the worker's ``timing`` and the model that served it (``served_model``),
        which the request's Timing records (api/observability/server_timing.py).

        With `resend`, a job claimed before is queued again unless it has a result (a
        batch's line driven again after the process that queued it died: its message may
        never have been sent; a second message of a job is harmless, tasks/running.py).
        Without `count_timeout`, a wait that ends before the job is not counted in the
        metrics as a failure (a batch's line, awaited a while at a time). `queued` is
        awaited once the job is queued (or found queued before), before its result is:
        what a request keeps beside its job, kept only for a job accepted."""
        started = time.monotonic()
        self._metrics.in_flight.inc()
        self._awaiting += 1
        try:
            answer = await self._run(route, job, wait, resend, queued)
        except GatewayError as exc:
            if count_timeout or not isinstance(exc, JobTimedOut):
                self._metrics.observe_failure(route.label, route.tenant.name, cause(exc))
            raise
        finally:
            self._metrics.in_flight.dec()
            self._awaiting -= 1
            self._published.pop(route.key, None)
        self._metrics.observe_answer(route.label, route.tenant.name, answer, time.monotonic() - started)
        return answer

    async def _run(
        self,
        route: JobRoute,
        job: dict[str, Any],
        wait: float,
        resend: bool,
        queued: Callable[[], Awaitable[None]] | None,
    ) -> dict[str, Any]:
        async with self._waiter.expect(route.key) as result:
            if resend:
                self._maybe_unqueued.add(route.key)
            if not await self._claim_and_queue(route, job, awaited=True):
                await self._waiter.follow(route.key)
            if queued is not None:
                await queued()
            try:
                with tracing.span("await result", attributes={"llm.job_id": route.key}):
                    meta = await asyncio.wait_for(asyncio.shield(result), wait)
            except TimeoutError:
                url = f"{self._config.public_base_url}/jobs/{route.job_id}"
                raise JobTimedOut(
                    f"job {route.job_id} did not finish within {wait:g}s; it is still {await self._where(route.key)}:"
                    f" its status and result are at /jobs/{route.job_id}",
                    location=url,
                ) from None
        return outcome(route.job_id, meta)

    async def _where(self, key: str) -> str:
        """Where an awaited job is, for the message of a wait that ended before it."""
        try:
            status = await self._store.status(key)
        except GatewayError:
            status = None
        if status is None or JobStatus(status["status"]).finished:
            return "queued or running"
        if status["status"] == JobStatus.RUNNING:
            return f"running (since {status['started_at']})"
        position = status.get("queue_position")
        return f"queued (accepted {status['accepted_at']}{f', position {position}' if position else ''})"

    async def stream(
        self,
        route: JobRoute,
        job: dict[str, Any] | None,
        leaving_cancels: bool = True,
        background: bool = False,
        notify: bool | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Queue the job (once per key) and yield its answer as it is produced; with no
        `job`, follow the job of `route.key`, queued before, without queuing anything.

        Yields ``{"accepted": True}`` once the job is queued (errors before that are
        raised as usual: the tenant's streams_in_flight first, before anything is
        queued), then ``{"index", "text"}`` per piece, then ``{"end": result}``. A job
        that fails raises its failure from the iteration. With `leaving_cancels` (a
        foreground stream's own request), a reader that leaves before the end cancels
        the job (`_reader_left`). A job queued in the `background` (a background response
        streamed as it is made) is queued as `submit` queues one (marked so, its end sent
        to the webhooks, `notify`, as submit's): its reader leaving never cancels it.
        """
        if job is not None and background:
            job, notify = self._notified(job, notify)
        token = await self._admission.join_stream(route)
        reading = finished = False
        try:
            async with self._waiter.expect(route.key) as result:
                # (On a Redis broker remembered until answered: its message may be lost, as a
                # submitted job's.)
                remember = not self._config.uses_rabbitmq
                if job is None or not await self._claim_and_queue(
                    route, {**job, "stream": True}, reply=True, remember=remember, background=background
                ):
                    await self._waiter.follow(route.key)
                elif background and notify:
                    await self._store.mark_notified(route.key)
                reading = True
                yield {"accepted": True}
                # Not the current span: the stream is read in another task than the one that began it.
                awaiting = tracing.start("await stream", {"llm.job_id": route.key})
                try:
                    stream_key, outage = self._config.keys.stream(route.key), self._config.wait_timeout
                    pieces = read_stream(
                        self._stream_reader, stream_key, route.job_id, result, outage, self._read_turns
                    )
                    async for piece in pieces:
                        if "end" in piece:
                            finished = True
                        yield piece
                except GatewayError:
                    finished = True  # the job's failure, its stream's last event
                    raise
                finally:
                    if awaiting is not None:
                        awaiting.end()
        finally:
            if reading:
                self._leave_later(route, token, leaving_cancels and not background and not finished)
            else:  # refused (or gone) before its job was queued: nothing of it stays
                await self._admission.leave_stream(route, token)

    async def _claim_and_queue(
        self,
        route: JobRoute,
        job: dict[str, Any],
        awaited: bool = False,
        reply: bool = False,
        remember: bool = False,
        background: bool = False,
    ) -> bool:
        """True when this request claimed the job's key and queued the job. With `reply`
        (or `awaited`), its result is published on this process's channel; `awaited`
        also remembers it until run() ends, to queue it again if need be; `remember`,
        until the lost-job sweep finds its result. A job queued in the `background` is
        marked so."""
        key = route.key
        # On each line logged about the job while this request works on it (the access
        # line is told of the job by the request's own Timing).
        current_job.set(route.log_context())
        reply_to = self._waiter.reply_channel if awaited or reply else ""
        try:
            claim, typed = await self._admission.admit(route, job, reply_to, background)
        except ResultStoreUnavailable:
            # Redis may have made the claim and lost its answer: the job may stand claimed
            # without having been queued.
            self._maybe_unqueued.add(key)
            raise
        if not claim.new and key not in self._maybe_unqueued:
            return False
        # Queued by this request; or claimed by a request of this process that was refused
        # (503) and maybe never queued: queued now, and a second message of a job that was
        # queued after all is harmless (tasks/running.py).
        retaken = not claim.new
        self._maybe_unqueued.discard(key)
        if retaken and not self._requeues.allow(key, "resent"):
            return False
        try:
            # When it was accepted, for its time in the queue (not part of its fingerprint).
            typed.accepted_at = time.time()
            if reply_to:
                typed.reply_to = reply_to
            sent = typed.wire()
            # A busy model's jobs wait their tenant's turn (not a batch's lines: they are
            # bounded, and below everything else already).
            queue = route.queue
            if not route.internal and "batch" not in job:
                queue = self._fair.route(queue, route.tenant.name)
            tracing.annotate(job_id=key, model=route.model, tenant=route.tenant.name)
            with tracing.span(f"publish {queue}", tracing.PRODUCER, _span_attributes(route, queue)):
                # The trace's context travels in the message's headers: a redelivered job joins it.
                headers = tracing.inject()
                await self._queue.submit(route.task, key, sent, queue, route.priority, headers)
            if awaited or remember:
                self._published[key] = PublishedJob(route, sent, queue, headers, awaited=awaited)
            log.debug("job queued")
        except GatewayError:
            # Not queued: a retry with this job_id must queue it.
            if retaken or not await self._admission.release(route):
                self._maybe_unqueued.add(key)
            raise
        # A job queued again under an earlier claim may have run: its result is followed.
        return not retaken


def _span_attributes(route: JobRoute, queue: str) -> dict[str, str]:
    return {"llm.job_id": route.key, "llm.model": route.model, "messaging.destination.name": queue,
            "messaging.system": "celery"}  # fmt: skip
