"""The worker's wiring: what happens as a worker process starts and stops, how it logs,
and the context every line about a job carries. The task bodies are in tasks/llm.py."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any

import celery.app.trace
from celery import Task
from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
    worker_ready,
    worker_shutdown,
    worker_shutting_down,
)
from celery.worker import state as worker_state

from shared.contract import NOT_JOBS
from shared.telemetry import tracing
from shared.telemetry.logs import current_job, use_json
from tasks.app import celery_app
from tasks.settings import process_config
from tasks.worker import Worker, WorkerTask

log = logging.getLogger(__name__)


def result_repr(value: Any, maxlen: int | None = None, *_: Any, **__: Any) -> str:
    """The text Celery makes of a job's result for its task events (Flower's "result"):
    repr() cut to `maxlen`. Results are plain JSON values, whose repr is safe and made
    in C; Celery's saferepr walks them in Python, a cost per job that docs/benchmark.md
    measures. Replaces `celery.app.trace.saferepr` (docs/private-apis.md)."""
    text = repr(value)
    if maxlen is not None and len(text) > maxlen:
        return text[: max(0, maxlen - 3)] + "..."
    return text


celery.app.trace.saferepr = result_repr  # used there only for the result's text


def _unacked_tags() -> list[str]:
    # The broker's delivery tags of the messages this worker holds (running or waiting
    # for a slot): renewed on a Redis broker so they are not handed out again.
    if not celery_app.conf.broker_url.startswith("redis"):
        return []
    tags = []
    for request in list(worker_state.reserved_requests):
        tag = getattr(request.message, "delivery_tag", None)
        if tag:
            tags.append(str(tag))
    return tags


@worker_init.connect
@worker_process_init.connect
def _start(**_: Any) -> None:
    # The process's state, from its Config read once, bound to its tasks; its
    # connections opened now, not by the first job.
    worker = Worker(process_config(), unacked_tags=_unacked_tags)
    WorkerTask.bind_worker(worker)
    if tracing.setup(worker.config, "llm-worker"):
        # Each task's run a span, continuing the trace its message's headers carry.
        from opentelemetry.instrumentation.celery import CeleryInstrumentor

        if not CeleryInstrumentor().is_instrumented_by_opentelemetry:
            CeleryInstrumentor().instrument()
    worker.client()
    _ = worker.running


@worker_ready.connect
def _report_capacity(sender: Any = None, **_: Any) -> None:
    # The pool's size and the queues consumed, known once the consumer is ready; the
    # scaling signals (GET /scaling) are made of every worker's reports.
    pool = getattr(sender, "pool", None)
    consumer = getattr(sender, "task_consumer", None)
    if pool is None or consumer is None:
        return
    queues = [queue.name for queue in consumer.queues]
    WorkerTask.bound_worker().report_capacity(
        int(pool.num_processes),
        queues,
        lambda: (len(worker_state.active_requests), len(worker_state.reserved_requests)),
    )


@after_setup_logger.connect
@after_setup_task_logger.connect
def _json_logs(logger: logging.Logger | None = None, loglevel: int | str | None = None, **_: Any) -> None:
    if logger is not None and process_config().log_format == "json":
        use_json(logger)
    # Celery logs two lines per job, "received" and "succeeded" (with the answer's text
    # in it): a job's own "job done" line replaces them below DEBUG. Failures are still
    # logged by Celery, at ERROR.
    level = logging.getLevelName(loglevel) if isinstance(loglevel, str) else loglevel
    if not isinstance(level, int) or level > logging.DEBUG:
        for name in ("celery.worker.strategy", "celery.app.trace"):
            logging.getLogger(name).setLevel(logging.WARNING)
    # httpx logs each request's whole URL at INFO: a webhook endpoint's query (its token)
    # with it. Deliveries log their own lines, naming the endpoint without its query.
    logging.getLogger("httpx").setLevel(logging.WARNING)


@task_prerun.connect
def _job_context(task_id: str | None = None, task: Task | None = None, args: Any = None, **_: Any) -> None:
    # Every line logged while the job runs names it, its model, its queue and its tenant.
    job = args[0] if args and isinstance(args[0], dict) else {}
    meta = job.get("meta") if isinstance(job.get("meta"), dict) else {}
    delivery = getattr(task.request, "delivery_info", None) if task is not None else None
    context = {"job_id": task_id or "", "queue": str((delivery or {}).get("routing_key") or "")}
    if task is None or task.name not in NOT_JOBS:  # a webhook delivery is for no model
        context["model"] = str(job.get("route") or meta.get("model") or "default")
        if isinstance(job.get("tenant"), str):
            context["tenant"] = job["tenant"]
    current_job.set(context)


@task_postrun.connect
def _job_context_done(**_: Any) -> None:
    current_job.set(None)


@worker_shutdown.connect
def _close(**_: Any) -> None:
    WorkerTask.bind_worker(None)
    tracing.shutdown()


@worker_shutting_down.connect
def _hand_back_after_grace(how: str = "", **_: Any) -> None:
    # SIGTERM starts Celery's warm shutdown, which waits for running jobs however long
    # they take. Give them WORKER_SHUTDOWN_GRACE seconds; then leave at once. The jobs'
    # messages were never acknowledged, so the broker hands them to another worker
    # (RabbitMQ as the connection closes, a Redis broker once the lease lapses), and
    # that worker may start them at once (the leases are given up). Celery's own cold
    # shutdown would close the model client under the running jobs, and store their
    # failures as their answers.
    if how != "Warm":
        return
    worker = WorkerTask.bound_worker()
    grace = worker.config.worker_shutdown_grace
    threading.Thread(target=_stop_after, args=(worker, grace), name="shutdown-grace", daemon=True).start()


def _stop_after(worker: Worker, grace: float) -> None:
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if worker.running_count == 0:
            return
        time.sleep(0.2)
    log.warning("%d job(s) still running after %gs: handing them back to the queue", worker.running_count, grace)
    worker.release()
    sys.stderr.flush()
    os._exit(1)
