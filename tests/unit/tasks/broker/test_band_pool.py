"""The thread pool that starts the held job of highest priority first (quorum queues)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from celery.concurrency.thread import TaskPool

from tasks.broker.band_pool import BandPool

pytestmark = pytest.mark.unit


class _Recorder:
    def __init__(self) -> None:
        self.order: list[str] = []
        self.gate = threading.Event()

    def target(self, name: str) -> None:
        if name == "first":
            self.gate.wait(5)
        self.order.append(name)


def _request(priority: int | None) -> tuple[Any, ...]:
    return ("llm.generate", "id", {"delivery_info": {"priority": priority}}, b"{}", "application/json", "utf-8")


def test_the_band_pool_starts_the_most_urgent_held_job_first() -> None:
    recorder = _Recorder()
    pool = BandPool(limit=1)
    pool.start()
    try:
        # One thread, busy with "first": the jobs received meanwhile wait, then start
        # by priority, the earliest first among equals.
        pool.apply_async(lambda *_: recorder.target("first"), args=_request(5))
        while pool.held:  # "first" taken by the thread
            time.sleep(0.01)
        for name, priority in [("low-a", 0), ("mid", 5), ("high", 9), ("low-b", 0), ("none", None)]:
            pool.apply_async(lambda *_, name=name: recorder.target(name), args=_request(priority))
        assert pool.held == 5
        recorder.gate.set()
        deadline = time.monotonic() + 5
        while len(recorder.order) < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        pool.stop()
    assert recorder.order == ["first", "high", "mid", "low-a", "low-b", "none"]
    assert issubclass(BandPool, TaskPool)
