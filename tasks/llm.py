"""The generation tasks. Each validates its job, calls the model server, returns a dict."""

from __future__ import annotations

import functools
import logging
import threading
import time
from typing import Any

import redis
from celery.signals import task_prerun, worker_init, worker_process_init, worker_shutdown

from settings import Config
from tasks.app import celery_app
from tasks.model_client import ChatRequest, ModelClient

log = logging.getLogger(__name__)

GENERATE = "llm.generate"
CHAT = "llm.chat"

_client: ModelClient | None = None
_client_lock = threading.Lock()


class InvalidJob(ValueError):
    """The job's payload is not what the API sends."""


def model_client() -> ModelClient:
    """This process's model-server client, made on first use from the environment."""
    global _client
    with _client_lock:
        if _client is None:
            _client = ModelClient(Config.read_from_env())
        return _client


def set_model_client(client: ModelClient | None) -> None:
    """Replace this process's model-server client (the old one is closed)."""
    global _client
    with _client_lock:
        if _client is not None and _client is not client:
            _client.close()
        _client = client


@worker_init.connect
@worker_process_init.connect
def _open_client(**_: Any) -> None:
    # httpx logs every request at INFO: a line per job that Celery already logs.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    model_client()


# One round trip: the job is running (GET /jobs/{id} reads it) and no longer queued.
MARK_STARTED = """
redis.call('HSET', KEYS[1], 'started_at', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[3])
"""


@functools.cache
def _job_marks() -> tuple[Config, Any]:
    config = Config.read_from_env()
    client = redis.Redis.from_url(
        config.redis_url,
        socket_connect_timeout=config.redis_connect_timeout,
        socket_timeout=config.redis_connect_timeout,
    )
    return config, client.register_script(MARK_STARTED)


@task_prerun.connect
def _mark_started(task_id: str, task: Any, **_: Any) -> None:
    if task.name not in (GENERATE, CHAT):
        return
    config, mark = _job_marks()
    try:
        mark(keys=[config.job_key(task_id), config.queued_key], args=[repr(time.time()), config.job_ttl, task_id])
    except (redis.RedisError, OSError) as exc:
        log.warning("could not mark job %s started: %s (it runs all the same)", task_id, exc)


@worker_shutdown.connect
def _close_client(**_: Any) -> None:
    set_model_client(None)


@celery_app.task(name=GENERATE)
def generate(job: dict[str, Any]) -> dict[str, Any]:
    """Complete ``job["content"]``, sent to the model as one user message."""
    content = job.get("content")
    if not isinstance(content, str):
        raise InvalidJob("a generate job needs 'content' (a string)")
    return _complete([{"role": "user", "content": content}], job)


@celery_app.task(name=CHAT)
def chat(job: dict[str, Any]) -> dict[str, Any]:
    """Continue the conversation in ``job["messages"]``."""
    messages = job.get("messages")
    if not isinstance(messages, list) or not messages or not all(_is_message(m) for m in messages):
        raise InvalidJob("a chat job needs 'messages': a non-empty list of {role, content} strings")
    return _complete([{"role": m["role"], "content": m["content"]} for m in messages], job)


def _is_message(message: Any) -> bool:
    return (
        isinstance(message, dict) and isinstance(message.get("role"), str) and isinstance(message.get("content"), str)
    )


def _complete(messages: list[dict[str, str]], job: dict[str, Any]) -> dict[str, Any]:
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
        )
    except (TypeError, ValueError) as exc:
        raise InvalidJob(f"invalid 'meta': {exc}") from None
    return model_client().chat(request).as_dict()
