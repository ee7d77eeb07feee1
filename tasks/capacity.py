"""What each worker process can take on, reported to Redis for the API's scaling signals.

Every ``WORKER_REPORT_SECONDS`` a worker writes, for each queue it consumes, its slots
(the pool's size), its busy slots (tasks executing), its jobs running (leased model
jobs) and the messages it holds (prefetched: running or waiting for a slot), under
``{REDIS_PREFIX}:capacity`` field ``{queue}|{worker}`` (shared/contract/keys.py). A worker
that stops removes its fields; one that dies is dropped by the API once its report is
three intervals old (api/observability/scaling.py).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from shared.config import Config
from shared.contract.keys import capacity_field

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Load:
    """One worker process's load at one moment."""

    busy: int  # slots executing a task
    running: int  # model jobs running (leased)
    held: int  # messages it holds: executing, or prefetched and waiting for a slot


class CapacityReporter:
    """A thread that reports this process's slots and load for each queue it consumes."""

    def __init__(
        self,
        config: Config,
        redis_client: redis.Redis,
        worker: str,
        slots: int,
        queues: list[str],
        load: Callable[[], Load],
    ) -> None:
        self._config = config
        self._redis = redis_client
        self._fields = [capacity_field(queue, worker) for queue in queues]
        self._slots = slots
        self._load = load
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._report_forever, name="capacity-reporter", daemon=True)

    def start(self) -> CapacityReporter:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop reporting, and take this process's fields away (it takes no more jobs)."""
        self._stopped.set()
        try:
            self._redis.hdel(self._config.keys.capacity, *self._fields)
        except (redis.RedisError, OSError) as exc:
            log.warning("could not withdraw this worker's capacity: %s", exc)

    def report(self) -> None:
        load = self._load()
        every = self._config.worker_report_seconds
        value = json.dumps({"slots": self._slots, "busy": load.busy, "running": load.running, "held": load.held,
                            "at": time.time(), "every": every})  # fmt: skip
        self._redis.hset(self._config.keys.capacity, mapping=dict.fromkeys(self._fields, value))

    def _report_forever(self) -> None:
        while not self._stopped.is_set():
            try:
                self.report()
            except (redis.RedisError, OSError) as exc:
                log.warning("could not report this worker's capacity: %s", exc)
            self._stopped.wait(self._config.worker_report_seconds)
