"""Driving batches: every API process looks after the unfinished batches (those in the
file store's ``active/``), each driven by one process at a time (a Redis lock that
lapses when its process dies, so another takes over).

Driving a batch: its input file is read again, and its lines without a record
(shared/storage/batch_files.py) are run as jobs through the job runner, as interactive
requests are, at priority 0 and with a job id derived from the batch and the line's
``custom_id``. At most ``BATCH_LINES_IN_FLIGHT`` lines of one model are queued or
running at once per API process, over all its batches, and at most
``BATCH_LINES_BESIDE_INTERACTIVE`` while the process awaits interactive requests:
those find free worker slots, a short queue and a worker whose CPU is not taken by
batch lines (bench/ scenario f measures it). A line's worker
writes its record before its result goes to Redis: a batch driven again (its
process died, Redis lost everything) runs only the lines that have none, and
those it queues again (a second message of a job is harmless).

When every line has its record, or the batch is cancelled or expires, the batch
is finalized: its output and error files written in OpenAI's format (a cancelled or
expired batch's lines that never ran are in its error file), its object updated,
its event sent (webhooks). Finalizing writes the same files again if it is
interrupted and run again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from api.errors import GatewayError, JobCancelled, JobTimedOut, TooManyRequests, Unavailable, cause
from api.http.statuses import status_of
from api.jobs.recovery import LostJobs
from api.jobs.route import JobRoute, JobRouting
from api.jobs.runner import JobRunner
from api.limits import RequestModels
from api.openai.batches.doorbell import Doorbell
from api.openai.batches.input import InputLine, ReadInput, read_input
from api.openai.batches.output import render_output
from api.openai.batches.scheduling import LineScheduler
from api.openai.batches.store import UNFINISHED, Batches
from api.openai.batches.token_limits import BatchTokenLimits
from api.openai.files.store import Files
from api.stopping import stop
from shared.config import Config
from shared.contract.scripts import BATCH_LOCK_RELEASE, BATCH_LOCK_RENEW
from shared.registry import Registry
from shared.storage.batch_files import ERR, OK, active_marker, file_data, line_job_id
from shared.tenants import DEFAULT_TENANT, Tenant

log = logging.getLogger(__name__)

Emit = Callable[[str, str], Any]  # (event type, batch id): a webhook event


@dataclass
class Progress:
    """A batch's lines as the process driving it counts them (metrics, request_counts)."""

    model: str
    total: int
    waiting: int = 0  # not yet queued by the keeper
    running: int = 0  # queued or running
    completed: int = 0
    failed: int = 0
    stop: str | None = None  # "cancelled", "expired"
    in_flight: dict[int, str] = field(default_factory=dict)  # line -> job id


class BatchKeeper:
    """Looks after the unfinished batches (one per API process)."""

    def __init__(
        self,
        config: Config,
        batches: Batches,
        files: Files,
        runner: JobRunner,
        routing: JobRouting,
        lost: LostJobs,
        redis: aioredis.Redis,
        registry: Registry,
        models: RequestModels,
        doorbell: Doorbell,
        emit: Emit | None = None,
        held_back: Callable[[str], bool] = lambda queue: False,
        token_limits: BatchTokenLimits | None = None,
    ) -> None:
        """`doorbell` rings when a batch is created or cancelled here; `emit` queues a
        batch's webhook event; `held_back(queue)` says whether tenants' jobs wait for room
        in a model's queue (FairShare.held_back); `token_limits` charges a batch to its
        project's input tokens per model and day as it starts (none: no such limit)."""
        self._config = config
        self._batches = batches
        self._files = files
        self._runner = runner
        self._routing = routing
        self._lost = lost
        self._redis = redis
        self._renew = redis.register_script(BATCH_LOCK_RENEW)
        self._release = redis.register_script(BATCH_LOCK_RELEASE)
        self._registry = registry
        self._models = models
        self._doorbell = doorbell
        self._emit = emit
        self._token_limits = token_limits
        self._me = uuid.uuid4().hex  # this process, as the batches' locks name it
        self._driving: dict[str, asyncio.Task[None]] = {}
        self._scheduler = LineScheduler(
            config.batch_lines_in_flight, config.batch_lines_beside_interactive, lambda: runner.awaiting, held_back
        )
        self.progress: dict[str, Progress] = {}
        # Seconds a line's result is awaited before its record is looked for.
        self._recheck = max(5.0, config.batch_poll_seconds * 10)

    def line_counts(self) -> dict[tuple[str, str], int]:
        """The lines of the batches this process drives, by model and state (not by
        batch: a batch id is no metric label, it would make one series per batch ever run)."""
        counts: dict[tuple[str, str], int] = {}
        for progress in list(self.progress.values()):
            for state in ("waiting", "running", "completed", "failed"):
                counts[(progress.model, state)] = counts.get((progress.model, state), 0) + getattr(progress, state)
        return counts

    async def run_forever(self) -> None:
        """Every BATCH_POLL_SECONDS (or when rung): drive each unfinished batch no process drives."""
        try:
            while True:
                try:
                    await self._look_after()
                except (RedisError, OSError, GatewayError) as exc:
                    log.warning("could not look after the batches: %s", exc)
                await self._doorbell.rung(self._config.batch_poll_seconds)
        finally:
            await stop(self._driving.values())

    async def _look_after(self) -> None:
        for batch_id in await self._batches.active():
            driving = self._driving.get(batch_id)
            if driving is not None and not driving.done():
                continue
            if not await self._hold(batch_id):
                continue
            self._driving[batch_id] = asyncio.create_task(self._drive(batch_id), name=f"batch {batch_id}")

    async def _hold(self, batch_id: str) -> bool:
        # Renewed every poll: a process that died lets go within five polls.
        ttl = max(2, math.ceil(self._config.batch_poll_seconds * 5))
        return bool(await self._renew(keys=[self._config.keys.batch_lock(batch_id)], args=[self._me, ttl]))

    async def _drive(self, batch_id: str) -> None:
        try:
            batch = await self._batches.read(batch_id)
            if batch is None or batch["status"] not in UNFINISHED:
                # Finished, but its event may not have been queued (the broker was down,
                # the process died): queued again (the same event id), then let go.
                if batch is not None:
                    await self._event(f"batch.{batch['status']}", batch_id)
                await self._files.blocking(self._files.store.delete, active_marker(batch_id))
                return
            read = await self._input(batch)
            if batch["status"] == "validating" and not await self._start(batch, read):
                return
            why = await self._run_lines(batch, read.lines)
            await self._finalize(batch, read.lines, why)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Looked after again at the next poll (by this process or another).
            log.exception("batch %s could not be driven now", batch_id)
        finally:
            self.progress.pop(batch_id, None)
            with contextlib.suppress(RedisError, OSError):
                await self._release(keys=[self._config.keys.batch_lock(batch_id)], args=[self._me])

    async def _input(self, batch: dict[str, Any]) -> ReadInput:
        def read() -> ReadInput:
            try:
                opened = self._files.store.open(file_data(batch["input_file_id"]))
            except FileNotFoundError:
                return ReadInput([], [(0, f"input file {batch['input_file_id']} was deleted")])
            with opened:
                return read_input(opened, self._config, self._registry, self._models)

        return await self._files.blocking(read)

    async def _start(self, batch: dict[str, Any], read: ReadInput) -> bool:
        """From validating to in_progress; or failed, with what is wrong (or the input
        tokens its project may still send its models today, api/openai/batches/token_limits.py)."""
        problems = list(read.problems)
        problems += [
            (line.number, f"url {line.url} is not the batch's endpoint {batch['endpoint']}")
            for line in read.lines
            if line.url != batch["endpoint"]
        ]
        now = int(time.time())
        if problems or read.too_many:
            errors = [{"code": "invalid_request", "message": why, "param": None, "line": number or None}
                      for number, why in problems[:1000]]  # fmt: skip
            if read.too_many:
                errors.insert(0, {"code": "too_many_requests", "message": read.refusal(self._config.batch_max_lines),
                                  "param": None, "line": None})  # fmt: skip
            batch.update(status="failed", failed_at=now, errors={"object": "list", "data": errors})
            await self._batches.write(batch)
            await self._event("batch.failed", batch["id"])
            await self._files.blocking(self._files.store.delete, active_marker(batch["id"]))
            return False
        if self._token_limits is not None:
            tenant = batch_tenant(batch).name
            refused = await self._token_limits.charge(batch["id"], tenant, read.lines, time.time())
            if refused is not None:
                # Before any line ran: refused whole, as OpenAI refuses a batch past its queue limit.
                errors = [{"code": "token_limit_exceeded", "message": refused, "param": None, "line": None}]
                batch.update(status="failed", failed_at=now, errors={"object": "list", "data": errors})
                await self._batches.write(batch)
                log.info("batch %s failed: %s", batch["id"], refused, extra={"batch": batch["id"]})
                await self._event("batch.failed", batch["id"])
                await self._files.blocking(self._files.store.delete, active_marker(batch["id"]))
                return False
        models = {line.model for line in read.lines}
        batch.update(status="in_progress", in_progress_at=now, model=models.pop() if len(models) == 1 else None)
        batch["request_counts"] = {"total": len(read.lines), "completed": 0, "failed": 0}
        await self._batches.write(batch)
        log.info("batch %s in progress: %d lines", batch["id"], len(read.lines), extra={"batch": batch["id"]})
        return True

    async def _run_lines(self, batch: dict[str, Any], lines: list[InputLine]) -> str | None:
        """Run the lines without a record until each has one: None; or until the batch
        is stopped: why ("cancelled", "expired")."""
        batch_id = batch["id"]
        models = {self._routing.label(line.job) for line in lines}
        progress = self.progress[batch_id] = Progress(",".join(sorted(models)), len(lines))
        while True:
            done = await self._files.blocking(self._batches.lines.finished, batch_id)
            progress.completed = sum(1 for outcome in done.values() if outcome == OK)
            progress.failed = len(done) - progress.completed
            pending = deque(line for line in lines if line.index not in done)
            progress.waiting = len(pending)
            if pending and not progress.stop:
                progress.stop = await self._stopped(batch)
            if not pending or progress.stop:
                return progress.stop
            watcher = asyncio.create_task(self._watch(batch, progress))
            try:
                runners = min(len(pending), self._config.batch_lines_in_flight)
                await asyncio.gather(*(self._take_lines(batch, pending, progress) for _ in range(runners)))
            finally:
                await stop([watcher])
            await self._write_counts(batch, progress)

    async def _take_lines(self, batch: dict[str, Any], pending: deque[InputLine], progress: Progress) -> None:
        tenant = batch_tenant(batch)
        while pending and not progress.stop:
            line = pending.popleft()
            job_id = line_job_id(batch["id"], line.custom_id)
            job = {**line.job, "batch": {"id": batch["id"], "line": line.index}}
            try:
                route, job = self._routing.route(line.task, job_id, job, tenant)
            except GatewayError as exc:  # its model is no longer served
                progress.waiting -= 1
                outcome: str | None = await self._failed(batch, line, exc)
            else:
                async with self._scheduler.slot(route.label, tenant.name, route.queue):
                    if progress.stop:
                        return
                    progress.waiting -= 1
                    progress.running += 1
                    progress.in_flight[line.index] = route.key
                    try:
                        outcome = await self._run_line(batch, line, route, job, progress)
                    finally:
                        progress.in_flight.pop(line.index, None)
                        progress.running -= 1
            if outcome == OK:
                progress.completed += 1
            elif outcome == ERR:
                progress.failed += 1

    async def _run_line(
        self, batch: dict[str, Any], line: InputLine, route: JobRoute, job: dict[str, Any], progress: Progress
    ) -> str | None:
        """Run one line: OK, ERR, or None when its batch stopped first.

        Its result is awaited a while at a time (`_recheck`): between two waits, its
        record is looked for, and it is queued again when Redis has forgotten it (a
        Redis that restarted empty loses the result a worker stored, and on a Redis
        broker the message too); a second message of a line finds its record or its
        lease, and is not sent to the model server again."""
        backoff = 0.5  # the result store or broker unavailable: tried again after this, doubling
        resend = True  # the first time in this drive: it may have been queued by a process that died
        while not progress.stop:
            remaining = batch["expires_at"] - time.time()
            if remaining <= 0:
                return None  # its window passed: the watcher stops the batch
            try:
                with self._scheduler.awaiting():
                    answer = await self._runner.run(route, job, min(remaining, self._recheck), resend=resend,
                                                    count_timeout=False)  # fmt: skip
                return await self._answered(batch, line, answer)
            except JobCancelled as exc:
                if progress.stop:
                    return None  # stopped with its batch: in the error file as the batch's
                # Cancelled on its own (DELETE /jobs/{id}): it ends as cancelled, and the
                # batch goes on (it is never queued again).
                return await self._failed(batch, line, exc)
            except JobTimedOut:
                record = await self._files.blocking(self._batches.lines.read, batch["id"], line.index)
                if record is not None:
                    return OK if record.answer is not None else ERR
                resend = False  # queued again only if its claim is gone, or its message
                try:
                    await self._lost.queue_again_if_lost(route, job, self._runner.reply_channel)
                except (GatewayError, RedisError, OSError) as exc:
                    log.warning("could not look for batch %s line %d's message: %s", batch["id"], line.index, exc)
            except (Unavailable, TooManyRequests) as exc:
                log.warning("batch %s line %d not queued now (%s): retried", batch["id"], line.index, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                resend = True
            except GatewayError as exc:
                # A failure: recorded by its worker; or refused here before any ran.
                return await self._failed(batch, line, exc)
        return None

    async def _answered(self, batch: dict[str, Any], line: InputLine, answer: dict[str, Any]) -> str:
        """A line answered: OK. Its worker recorded the answer before storing it; were the
        record missing, the line would be run again and again (each run answered at once
        from Redis): it is recorded here from the answer."""
        lines = self._batches.lines
        if await self._files.blocking(lines.read, batch["id"], line.index) is None:
            log.warning("batch %s line %d answered without its record: recorded from its answer", batch["id"],
                        line.index, extra={"batch": batch["id"]})  # fmt: skip
            await self._files.blocking(lines.write_answer, batch["id"], line.index, answer)
        return OK

    async def _failed(self, batch: dict[str, Any], line: InputLine, exc: GatewayError) -> str:
        """A line that ended with `exc`: its failure recorded unless its worker did: ERR."""
        record = await self._files.blocking(self._batches.lines.read, batch["id"], line.index)
        if record is None:
            await self._files.blocking(
                self._batches.lines.write_failure, batch["id"], line.index, cause(exc), exc.message, status_of(exc)
            )
        return ERR

    async def _watch(self, batch: dict[str, Any], progress: Progress) -> None:
        """While lines run: their counts written to the batch's object, the lock kept,
        and the batch stopped when it is cancelled or its window passes."""
        written = (-1, -1)
        while True:
            await self._doorbell.wait(self._config.batch_poll_seconds)
            with contextlib.suppress(RedisError, OSError):
                await self._hold(batch["id"])
            if not progress.stop:
                progress.stop = await self._stopped(batch)
            if progress.stop:
                await self._cancel_in_flight(progress)
            if (progress.completed, progress.failed) != written:
                written = (progress.completed, progress.failed)
                await self._write_counts(batch, progress)

    async def _stopped(self, batch: dict[str, Any]) -> str | None:
        why = await self._files.blocking(self._batches.lines.stopped, batch["id"])
        if why is None and time.time() >= batch["expires_at"]:
            why = "expired"
            await self._files.blocking(self._batches.lines.stop, batch["id"], why, int(time.time()))
        if why is not None:
            log.info("batch %s %s: its lines not finished are stopped", batch["id"], why)
        return why

    async def _cancel_in_flight(self, progress: Progress) -> None:
        for key in list(progress.in_flight.values()):
            try:
                await self._runner.cancel(key)
            except GatewayError as exc:
                log.warning("could not stop job %s now: %s", key, exc)

    async def _write_counts(self, batch: dict[str, Any], progress: Progress) -> None:
        batch["request_counts"] = {"total": progress.total, "completed": progress.completed, "failed": progress.failed}
        await self._batches.write(batch)

    async def _finalize(self, batch: dict[str, Any], lines: list[InputLine], why: str | None) -> None:
        batch_id = batch["id"]
        now = int(time.time())
        batch.update(status="finalizing", finalizing_at=now)
        await self._batches.write(batch)
        finished = await self._files.blocking(self._batches.lines.finished, batch_id)
        output, errors = await self._files.blocking(render_output, self._files.store, batch_id, lines, finished, why)
        owner = batch.get("owner")
        if output:
            found = await self._files.write(f"file-{batch_id}-output", f"{batch_id}_output.jsonl", output, owner)
            batch["output_file_id"] = found["id"]
        if errors:
            found = await self._files.write(f"file-{batch_id}-errors", f"{batch_id}_error.jsonl", errors, owner)
            batch["error_file_id"] = found["id"]
        completed, failed = output.count(b"\n"), errors.count(b"\n")
        batch["request_counts"] = {"total": len(lines), "completed": completed, "failed": failed}
        status = {None: "completed", "cancelled": "cancelled", "expired": "expired"}[why]
        batch.update(status=status, **{f"{status}_at": int(time.time())})
        if why == "cancelled":
            mark = await self._files.blocking(self._batches.lines.stop_mark, batch_id)
            batch["cancelling_at"] = (mark or {}).get("at")
        await self._batches.write(batch)
        log.info("batch %s %s: %d completed, %d failed", batch_id, status, completed, failed, extra={"batch": batch_id})
        await self._event(f"batch.{status}", batch_id)
        await self._files.blocking(self._files.store.delete, active_marker(batch_id))

    async def _event(self, kind: str, batch_id: str) -> None:
        """Queue the batch's event; raises when it could not (the batch stays active, and
        its event is queued again at the next look)."""
        if self._emit is not None:
            await self._emit(kind, batch_id)


def batch_tenant(batch: dict[str, Any]) -> Tenant:
    """The tenant a batch's lines are run for (their usage counted to it, and to the key
    that made the batch), without the tenant's quotas: a batch runs at its own pace,
    beneath interactive traffic."""
    return Tenant(str(batch.get("tenant") or DEFAULT_TENANT), key_id=str(batch.get("key_id") or ""))
