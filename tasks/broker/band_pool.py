"""Celery's thread pool, starting the jobs a worker holds most urgent first.

With quorum queues (shared/broker/queues.py) a model's jobs wait in three queues, one per
priority band, and a worker consumes all three: RabbitMQ lets each of its consumers
hold up to WORKER_CONCURRENCY unacknowledged messages (quorum queues have no
channel-wide prefetch), so a busy worker may hold more jobs than it has threads.
Those wait here, and a thread that frees takes the held job of highest priority,
the earliest received among equals: the order a priority queue would have given.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable
from typing import Any

from celery.concurrency.base import apply_target
from celery.concurrency.thread import ApplyResult, TaskPool


def priority_of(args: tuple[Any, ...] | None) -> int:
    """A task request's message priority (0 when it has none). Celery calls the pool with
    (task name, id, request dict, body, ...), the message's delivery_info in the dict."""
    request = args[2] if args and len(args) > 2 and isinstance(args[2], dict) else {}
    info = request.get("delivery_info") or {}
    priority = info.get("priority") if isinstance(info, dict) else None
    return priority if isinstance(priority, int) else 0


class BandPool(TaskPool):
    """Used through ``worker_pool = "tasks.broker.band_pool:BandPool"`` (tasks/settings.py)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._held: list[tuple[int, int, tuple[Any, ...]]] = []
        self._order = itertools.count()
        self._lock = threading.Lock()

    def on_apply(
        self,
        target: Callable[..., Any],
        args: tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
        callback: Callable[..., Any] | None = None,
        accept_callback: Callable[..., Any] | None = None,
        **_: Any,
    ) -> ApplyResult:
        with self._lock:
            heapq.heappush(
                self._held, (-priority_of(args), next(self._order), (target, args, kwargs, callback, accept_callback))
            )
        # One run per job held; each run takes the most urgent job held when it starts.
        return ApplyResult(self.executor.submit(self._run_next))

    def _run_next(self) -> Any:
        with self._lock:
            _, _, job = heapq.heappop(self._held)
        return apply_target(*job)

    @property
    def held(self) -> int:
        """Jobs received and not started yet."""
        with self._lock:
            return len(self._held)
