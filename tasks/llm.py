"""The generation tasks. Each parses its job (the contract's `Job`), calls the model
server, and returns a JSON-able dict. The worker's wiring is in tasks/wiring.py."""

from __future__ import annotations

import logging
import time
from typing import Any, NoReturn

from celery.exceptions import Ignore

from shared.contract import InvalidJob, Job, JobFailure, Start, TaskName
from shared.contract.embeddings import pack_vector
from shared.contract.responses import dump_record, record_ttl
from shared.telemetry import tracing
from shared.tenants import DEFAULT_TENANT
from tasks.app import celery_app
from tasks.batch_lines import LineStopped, run_line
from tasks.model import Cancelled, ChatRequest
from tasks.model.protocol import Embedded, Turn
from tasks.relay import Relay
from tasks.worker import WorkerTask

log = logging.getLogger(__name__)

__all__ = ["InvalidJob", "chat", "complete", "embed", "generate", "models"]


@celery_app.task(name=TaskName.GENERATE.value, bind=True)
def generate(self: WorkerTask, job: dict[str, Any]) -> dict[str, Any]:
    """Complete ``job["content"]``, sent to the model as one user message."""
    return _complete(self, TaskName.GENERATE, job)


@celery_app.task(name=TaskName.CHAT.value, bind=True)
def chat(self: WorkerTask, job: dict[str, Any]) -> dict[str, Any]:
    """Continue the conversation in ``job["messages"]``."""
    return _complete(self, TaskName.CHAT, job)


@celery_app.task(name=TaskName.COMPLETE.value, bind=True)
def complete(self: WorkerTask, job: dict[str, Any]) -> dict[str, Any]:
    """A raw completion of ``job["openai"]["prompt"]`` (the model server's /v1/completions)."""
    return _complete(self, TaskName.COMPLETE, job)


# No task events (Flower's view of a job): an embedding job is a share of one model call,
# and its three events (received, started, succeeded) cost 12 to 16 % of the worker's
# CPU per job (docs/embeddings.md).
@celery_app.task(name=TaskName.EMBED.value, bind=True, send_events=False)
def embed(self: WorkerTask, job: dict[str, Any]) -> dict[str, Any]:
    """Embed ``job["embed"]["input"]`` (the model server's /v1/embeddings), in one call
    with other jobs' inputs where they arrive together (tasks/model/coalesce.py)."""
    return _complete(self, TaskName.EMBED, job)


@celery_app.task(name=TaskName.MODELS.value, bind=True)
def models(self: WorkerTask, _job: dict[str, Any]) -> dict[str, Any]:
    """The models the model server serves (its /v1/models); the job is empty."""
    return {"models": self.worker.client().served_models()}


def _complete(task: WorkerTask, name: TaskName, raw: dict[str, Any]) -> dict[str, Any]:
    job = Job.parse(raw)
    if job.batch is None or task.request.id is None:
        try:
            return _run(task, name, job)
        except JobFailure as failure:
            if job.record is not None and task.request.id is not None:
                task.worker.response_outcomes.failed(job.record, failure)
            raise
    try:
        return run_line(task.worker.batch_lines, job.batch, lambda: _run(task, name, job))
    except LineStopped as stopped:
        _report_cancelled(task, f"before it started: its batch was {stopped}")


def _run(task: WorkerTask, name: TaskName, job: Job) -> dict[str, Any]:
    if name == TaskName.EMBED:
        return _embed(task, job)
    meta = job.meta
    request = ChatRequest(
        messages=job.prompt(name),
        temperature=None if meta.temperature_unset else meta.temperature,
        tokens_limit=meta.tokens_limit,
        stop_words=meta.stop_words,
        model=meta.model or None,
        sampling=meta.sampling,
        extra={k: v for k, v in (job.openai or {}).items() if k != "messages"},
        raw=name == TaskName.COMPLETE,
        priority=meta.priority,
        accepted_at=job.accepted_at,
        fallbacks=job.fallbacks,
        tenant=job.tenant or DEFAULT_TENANT,
        weight=job.weight or 1.0,
        anthropic=job.anthropic,
    )
    started = time.time()
    worker = task.worker
    job_id = task.request.id
    if job_id is None:  # called directly, not by a worker
        return worker.client(job.route).chat(request).as_dict()
    jobs = worker.running
    with jobs.running(job_id) as cancel:
        _start(task, job, job_id, started)
        relay = None
        if job.stream:
            config = worker.config
            relay = Relay(jobs.redis, config.keys.stream(job_id), config.running_stream_ttl, config.stream_ttl)
            relay.resume()  # a run after a worker that died mid-answer goes on where it stopped
        asked = time.monotonic()
        try:
            completion = worker.client(job.route).chat(request, cancel, relay.delta if relay else None)
        except Cancelled:
            _report_cancelled(task, "while running")
        answered = time.monotonic()
        if cancel.is_set():
            _report_cancelled(task, "as it finished")
        answer = completion.as_dict()
        answer["timing"] = timing = _timing(job, started)
        _name_trace(answer)
        # The wait for a free slot of one of its model's servers is queueing, not the model's time.
        waited = completion.slot_wait
        timing["model_seconds"] = round(answered - asked - waited, 4)
        if waited:
            timing["queued_seconds"] = round(timing.get("queued_seconds", 0.0) + waited, 4)
        if completion.first_piece_at is not None:
            timing["first_token_seconds"] = round(completion.first_piece_at - asked - waited, 4)
        if job.record is not None:
            # Before anyone hears of its end: a conversation read then holds its turn.
            worker.response_outcomes.succeeded(job.record, answer)
        if relay is not None:
            relay.end(answer)
        usage = completion.usage or {}
        served = {}
        if completion.served_by:
            served = {"served_model": completion.served_by[0], "server": completion.served_by[1]}
        log.info(
            "job done",
            extra={
                **served,
                "seconds": timing["run_seconds"],
                "queued_seconds": timing.get("queued_seconds"),
                "tokens": usage.get("completion_tokens"),
                "finish_reason": answer["finish_reason"],
            },
        )
        return answer


def _start(task: WorkerTask, job: Job, job_id: str, started: float) -> None:
    """Lease the job to this worker, or stop: it is cancelled, answered, or (handed out
    again while another worker runs it) waited for until that run ends."""
    worker = task.worker
    jobs = worker.running
    reply_to = job.reply_to or ""
    verdict = jobs.start(job_id, reply_to)
    if verdict == Start.RUNNING:
        verdict = jobs.wait_to_start(job_id, reply_to)
    # A cancelled job's answer (409 to its callers) was stored by DELETE /jobs/{id}:
    # Ignore leaves it as it is, and acknowledges the message.
    if verdict == Start.CANCELLED:
        _report_cancelled(task, "before it started")
    if verdict == Start.ANSWERED:
        # Run before, by a worker that died before acknowledging the message: the
        # caller has its answer, and the model server is not asked again.
        log.info("job %s already answered: not run again", job_id)
        raise Ignore
    if job.record is not None:
        _keep_record(jobs.redis, worker.config, job_id, job.record)
    if tracing.enabled():
        _trace_start(task, job, started)


def _embed(task: WorkerTask, job: Job) -> dict[str, Any]:
    inputs = job.embed_inputs()
    options = {k: v for k, v in (job.embed or {}).items() if k != "input" and v is not None}
    if job.meta.model:
        options["model"] = job.meta.model
    started = time.time()
    worker = task.worker
    job_id = task.request.id
    turn = Turn(job.meta.priority, job.accepted_at, job.tenant or DEFAULT_TENANT, job.weight or 1.0)
    if job_id is None:  # called directly, not by a worker
        embedded = worker.embedder(job.route, job.fallbacks).embed(inputs, options, job.tenant, turn=turn).embedded
        return _embedding_answer(embedded)
    with worker.running.running(job_id) as cancel:
        _start(task, job, job_id, started)
        asked = time.monotonic()
        try:
            shared = worker.embedder(job.route, job.fallbacks).embed(inputs, options, job.tenant, cancel, turn)
        except Cancelled:
            _report_cancelled(task, "while running")
        answer = _embedding_answer(shared.embedded)
        answer["timing"] = timing = _timing(job, started)
        _name_trace(answer)
        timing["model_seconds"] = round(time.monotonic() - asked, 4)
        log.info("job done", extra={"seconds": timing["run_seconds"], "queued_seconds": timing.get("queued_seconds"),
                                    "inputs": len(inputs), "call_inputs": shared.call_inputs})  # fmt: skip
        return answer


def _embedding_answer(embedded: Embedded) -> dict[str, Any]:
    """An embedding job's answer: each vector packed as the contract says
    (shared/contract/embeddings.py), its tokens (a call's alone, or its share of a call of its
    tenant's jobs), the model (and, for a model with several servers or fallbacks, the
    registry's model) that served it; nothing of the call's other jobs."""
    vectors = [pack_vector(vector) for vector in embedded.vectors]
    usage = embedded.usage or {"prompt_tokens": 0, "total_tokens": 0}
    answer = {"embeddings": vectors, "model": embedded.model, "usage": usage}
    if embedded.served_by:
        answer["served_model"], answer["server"] = embedded.served_by
    return answer


def _keep_record(client: Any, config: Any, job_id: str, record: dict[str, Any]) -> None:
    """A response's record, written again if Redis lost it (it came back empty)."""
    try:
        client.set(config.keys.response(job_id), dump_record(record), nx=True, ex=record_ttl(config))
    except Exception as exc:  # noqa: BLE001 - the answer matters more than its record
        log.warning("could not keep the record of response %s: %s", job_id, exc)


def _trace_start(task: WorkerTask, job: Job, started: float) -> None:
    # The time the job waited, as a span of its trace (the publish span's child, as the run is).
    model = job.route or job.meta.model or "default"
    if job.accepted_at is not None:
        tracing.record("queue wait", job.accepted_at, started, task.request, {"llm.job_id": task.request.id})
    tracing.annotate(job_id=task.request.id, model=model, tenant=job.tenant)


def _name_trace(answer: dict[str, Any]) -> None:
    """The trace the job ran in, on its answer (GET /jobs/{id} shows it, to find the trace);
    nothing when tracing is off."""
    ids = tracing.log_ids()
    if ids is not None:
        answer["trace_id"] = ids[0]


def _timing(job: Job, started: float) -> dict[str, float]:
    """Seconds the job waited in its queue (from the API's clock to this worker's), and
    ran; the caller adds the seconds the model server took, and to its first token."""
    timing = {"run_seconds": round(time.time() - started, 4)}
    if job.accepted_at is not None:
        timing["queued_seconds"] = round(max(0.0, started - job.accepted_at), 4)
    return timing


def _report_cancelled(task: WorkerTask, when: str) -> NoReturn:
    log.info("job %s cancelled %s", task.request.id, when)
    if not task.send_events:  # a task Flower is not told of (llm.embed)
        raise Ignore
    try:
        # For Flower only: a broker that is down must not turn a cancellation into a failure.
        task.send_event("task-revoked", terminated=not when.startswith("before it started"), signum=None, expired=False)
    except Exception as exc:  # noqa: BLE001
        log.warning("could not report the cancellation of job %s to Flower: %s", task.request.id, exc)
    raise Ignore
