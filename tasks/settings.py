"""The workers' Celery settings: those the API shares (shared/broker/settings.py) and
the worker's own classes, named from the classes themselves."""

from __future__ import annotations

from functools import cache
from typing import Any

from shared.broker.settings import celery_settings
from shared.config import Config
from shared.storage import redis_clients
from tasks.broker.band_pool import BandPool
from tasks.dead_letters import Consumer
from tasks.result_store import ResultStore, SentinelResultStore


def _name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


@cache
def process_config() -> Config:
    """This worker process's Config, read from the environment once: Celery's settings
    (celeryconfig.py) and the process's Worker (tasks/wiring.py) are made from it."""
    return Config.read_from_env()


def worker_settings(config: Config) -> dict[str, Any]:
    """Celery's settings for a worker (and Flower) of `config`."""
    settings = celery_settings(config)
    backend = SentinelResultStore if config.sentinels else ResultStore
    if config.sentinels:
        settings["result_backend_transport_options"] = {
            **settings["result_backend_transport_options"],
            "master_name": config.redis_sentinel_master,
            "sentinel_kwargs": redis_clients.sentinel_kwargs(config),
        }
        # Replicas that must hold a result before its job's message is acknowledged.
        settings["redis_replica_acks"] = config.redis_replica_acks
    if config.quorum_queues:
        # A worker holds jobs of several priority bands: it starts the most urgent first.
        settings["worker_pool"] = _name(BandPool)
    return {
        **settings,
        # Celery's Redis backend (on the Sentinels' master), storing each job's result once.
        "result_backend": f"{_name(backend)}+{redis_clients.result_backend_url(config)}",
        # Failed and unprocessable jobs go to the dead-letter queue.
        "worker_consumer": _name(Consumer),
        # One result store for the process, not one per pool thread: its Redis client is
        # thread-safe, and a thread's first job no longer builds a store and its pool.
        "result_backend_thread_safe": True,
    }
