"""The generation tasks. Each validates its job, calls the model server, returns a dict."""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery.signals import worker_init, worker_process_init, worker_shutdown

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
