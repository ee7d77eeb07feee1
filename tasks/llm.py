"""The generation tasks. Each validates its job, calls the model server, returns a dict."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any, NoReturn

import celery.app.trace
from celery import Task
from celery.exceptions import Ignore
from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
    worker_shutdown,
    worker_shutting_down,
)
from celery.worker import state as worker_state

from gateway.config import Config
from gateway.logs import current_job, use_json
from gateway.registry import load_registry
from tasks.app import celery_app
from tasks.model_client import Cancelled, ChatRequest, ModelClient
from tasks.relay import Relay
from tasks.running import RunningJobs

log = logging.getLogger(__name__)

GENERATE = "llm.generate"
CHAT = "llm.chat"
MODELS = "llm.models"
# OpenAI parameters passed to the model server as given, when a job brings them.
SAMPLING = frozenset({"top_p", "seed", "n", "presence_penalty", "frequency_penalty"})

_client: ModelClient | None = None
_routed: dict[str, ModelClient] = {}  # per model of the registry (MODELS, MODELS_FILE)
_client_lock = threading.Lock()
_running: RunningJobs | None = None


def result_repr(value: Any, maxlen: int | None = None, *_: Any, **__: Any) -> str:
    """The text Celery makes of a job's result for its task events (Flower's "result"):
    repr() cut to `maxlen`. Results are plain JSON values, whose repr is safe and made
    in C; Celery's saferepr walks them in Python, at 0.09 ms a job (5 % of the worker's
    CPU, bench/)."""
    text = repr(value)
    if maxlen is not None and len(text) > maxlen:
        return text[: max(0, maxlen - 3)] + "..."
    return text


celery.app.trace.saferepr = result_repr  # used there only for the result's text


class InvalidJob(ValueError):
    """The job's payload is not what the API sends."""


def model_client(route: str | None = None) -> ModelClient:
    """This process's client of the model server of `route` (a model of the registry;
    INNER_LLM_URL's without one), made on first use from the environment."""
    global _client
    with _client_lock:
        if route is None:
            if _client is None:
                _client = ModelClient(Config.read_from_env())
            return _client
        client = _routed.get(route)
        if client is None:
            config = Config.read_from_env()
            model = load_registry(config).by_name(route)
            served = model.served_name or model.name
            update = {"inner_llm_url": model.url, "inner_llm_api_key": model.api_key, "default_model": served}
            client = _routed[route] = ModelClient(config.model_copy(update=update))
        return client


def running_jobs() -> RunningJobs:
    """This process's record of its running jobs (leases, cancellation), made on first use."""
    global _running
    with _client_lock:
        if _running is None:
            _running = RunningJobs(Config.read_from_env(), _unacked_tags)
        return _running


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


def set_model_client(client: ModelClient | None) -> None:
    """Replace this process's model-server client (the old one is closed)."""
    global _client
    with _client_lock:
        if _client is not None and _client is not client:
            _client.close()
        _client = client
        for routed in _routed.values():
            routed.close()
        _routed.clear()


@worker_init.connect
@worker_process_init.connect
def _open_client(**_: Any) -> None:
    model_client()
    running_jobs()


@after_setup_logger.connect
@after_setup_task_logger.connect
def _json_logs(logger: logging.Logger | None = None, loglevel: int | str | None = None, **_: Any) -> None:
    if logger is not None and Config.read_from_env().log_format == "json":
        use_json(logger)
    # Celery logs two lines per job, "received" and "succeeded" (with the answer's text
    # in it): a job's own "job done" line replaces them below DEBUG. Failures are still
    # logged by Celery, at ERROR.
    level = logging.getLevelName(loglevel) if isinstance(loglevel, str) else loglevel
    if not isinstance(level, int) or level > logging.DEBUG:
        for name in ("celery.worker.strategy", "celery.app.trace"):
            logging.getLogger(name).setLevel(logging.WARNING)


@task_prerun.connect
def _job_context(task_id: str | None = None, task: Task | None = None, args: Any = None, **_: Any) -> None:
    # Every line logged while the job runs names it, its model and its queue.
    job = args[0] if args and isinstance(args[0], dict) else {}
    meta = job.get("meta") if isinstance(job.get("meta"), dict) else {}
    delivery = getattr(task.request, "delivery_info", None) if task is not None else None
    current_job.set(
        {
            "job_id": task_id or "",
            "model": str(job.get("route") or meta.get("model") or "default"),
            "queue": str((delivery or {}).get("routing_key") or ""),
        }
    )


@task_postrun.connect
def _job_context_done(**_: Any) -> None:
    current_job.set(None)


@worker_shutdown.connect
def _close_client(**_: Any) -> None:
    set_model_client(None)


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
    grace = Config.read_from_env().worker_shutdown_grace
    threading.Thread(target=_stop_after, args=(grace,), name="shutdown-grace", daemon=True).start()


def _stop_after(grace: float) -> None:
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if _running is None or _running.count == 0:
            return
        time.sleep(0.2)
    assert _running is not None
    log.warning("%d job(s) still running after %gs: handing them back to the queue", _running.count, grace)
    _running.release()
    sys.stderr.flush()
    os._exit(1)


@celery_app.task(name=GENERATE, bind=True)
def generate(self: Task, job: dict[str, Any]) -> dict[str, Any]:
    """Complete ``job["content"]``, sent to the model as one user message."""
    content = job.get("content")
    if not isinstance(content, str):
        raise InvalidJob("a generate job needs 'content' (a string)")
    return _complete(self, [{"role": "user", "content": content}], job)


@celery_app.task(name=CHAT, bind=True)
def chat(self: Task, job: dict[str, Any]) -> dict[str, Any]:
    """Continue the conversation in ``job["messages"]``."""
    messages = job.get("messages")
    if not isinstance(messages, list) or not messages or not all(_is_message(m) for m in messages):
        raise InvalidJob("a chat job needs 'messages': a non-empty list of {role, content} strings")
    return _complete(self, [{"role": m["role"], "content": m["content"]} for m in messages], job)


def _is_message(message: Any) -> bool:
    return (
        isinstance(message, dict) and isinstance(message.get("role"), str) and isinstance(message.get("content"), str)
    )


def _complete(task: Task, messages: list[dict[str, str]], job: dict[str, Any]) -> dict[str, Any]:
    meta = job.get("meta") or {}
    if not isinstance(meta, dict):
        raise InvalidJob("'meta' must be an object")
    try:
        request = ChatRequest(
            messages=messages,
            temperature=float(meta.get("temperature", 0.2)),
            tokens_limit=None if meta.get("tokens_limit") is None else int(meta["tokens_limit"]),
            stop_words=[str(word) for word in meta.get("stop_words") or []],
            model=meta.get("model") or None,
            sampling=_sampling(meta.get("sampling")),
        )
    except (TypeError, ValueError) as exc:
        raise InvalidJob(f"invalid 'meta': {exc}") from None
    started = time.time()
    route = job.get("route")
    if route is not None and not isinstance(route, str):
        raise InvalidJob("'route' must be a model name")
    job_id = task.request.id
    if job_id is None:  # called directly, not by a worker
        return model_client(route).chat(request).as_dict()
    jobs = running_jobs()
    with jobs.running(job_id) as cancel:
        verdict = jobs.start(job_id)
        if verdict == "running":
            # Handed out again while another worker still runs it: wait for that run.
            verdict = jobs.wait_to_start(job_id)
        # A cancelled job's answer (409 to its callers) was stored by DELETE /jobs/{id}:
        # Ignore leaves it as it is, and acknowledges the message.
        if verdict == "cancelled":
            _report_cancelled(task, "before it started")
        if verdict == "answered":
            # Run before, by a worker that died before acknowledging the message: the
            # caller has its answer, and the model server is not asked again.
            log.info("job %s already answered: not run again", job_id)
            raise Ignore
        relay = None
        if job.get("stream"):
            relay = Relay(jobs.commands, jobs.config.stream_key(job_id), jobs.config.result_ttl)
        try:
            completion = model_client(route).chat(request, cancel, relay.delta if relay else None)
        except Cancelled:
            _report_cancelled(task, "while running")
        if cancel.is_set():
            _report_cancelled(task, "as it finished")
        if relay is not None:
            relay.end(completion)
        answer = completion.as_dict()
        answer["timing"] = timing = _timing(job, started)
        usage = completion.usage or {}
        log.info(
            "job done",
            extra={
                "seconds": timing["run_seconds"],
                "queued_seconds": timing.get("queued_seconds"),
                "tokens": usage.get("completion_tokens"),
                "finish_reason": answer["finish_reason"],
            },
        )
        return answer


def _timing(job: dict[str, Any], started: float) -> dict[str, float]:
    """Seconds the job waited in its queue (from the API's clock to this worker's), and ran."""
    timing = {"run_seconds": round(time.time() - started, 4)}
    accepted = job.get("accepted_at")
    if isinstance(accepted, int | float):
        timing["queued_seconds"] = round(max(0.0, started - accepted), 4)
    return timing


def _sampling(given: Any) -> dict[str, Any]:
    if not given:
        return {}
    if not isinstance(given, dict) or not set(given) <= SAMPLING:
        raise ValueError(f"'sampling' takes only {', '.join(sorted(SAMPLING))}")
    return {key: value for key, value in given.items() if value is not None}


@celery_app.task(name=MODELS)
def models(_job: dict[str, Any]) -> dict[str, Any]:
    """The models the model server serves (its /v1/models); the job is empty."""
    return {"models": model_client().served_models()}


def _report_cancelled(task: Task, when: str) -> NoReturn:
    log.info("job %s cancelled %s", task.request.id, when)
    task.send_event("task-revoked", terminated=when != "before it started", signum=None, expired=False)
    raise Ignore
