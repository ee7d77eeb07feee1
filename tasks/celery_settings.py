"""The workers' Celery settings: those the API shares (gateway/celery_settings.py) and
the worker's own classes, named from the classes themselves."""

from __future__ import annotations

from typing import Any

from gateway.celery_settings import celery_settings
from gateway.config import Config
from tasks.dead_letters import Consumer
from tasks.result_store import ResultStore


def _name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def worker_settings(config: Config) -> dict[str, Any]:
    """Celery's settings for a worker (and Flower) of `config`."""
    return {
        **celery_settings(config),
        # Celery's Redis backend, storing each job's result once.
        "result_backend": f"{_name(ResultStore)}+{config.redis_url}",
        # Failed and unprocessable jobs go to the dead-letter queue.
        "worker_consumer": _name(Consumer),
    }
