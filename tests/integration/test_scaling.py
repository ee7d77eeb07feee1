"""The signals to scale workers on (GET /scaling, /metrics), read off real workers under load."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from testing.fake_model_server import FakeModelServer
from tests.conftest import Stack, StackFactory


def signals(stack: Stack) -> dict[str, Any]:
    answer = httpx.get(f"{stack.url}/scaling", timeout=10)
    assert answer.status_code == 200, answer.text
    (model,) = answer.json()["models"].values()
    return model


def eventually(stack: Stack, check: Callable[[dict[str, Any]], bool], what: str, seconds: float = 20) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        now = signals(stack)
        if check(now):
            return now
        if time.monotonic() > deadline:
            raise AssertionError(f"never {what}: {now}")
        time.sleep(0.1)


def gauges(stack: Stack) -> dict[str, float]:
    text = httpx.get(f"{stack.url}/metrics", timeout=10).text
    return {
        name: float(value) for name, value in re.findall(r'^(llm_api_model_\w+)\{model="default"\} (\S+)$', text, re.M)
    }


@pytest.mark.integration
def test_the_signals_follow_a_busy_model_and_its_workers(make_stack: StackFactory, fake: FakeModelServer) -> None:
    stack = make_stack(workers=1, concurrency=4, WORKER_REPORT_SECONDS="0.3")
    idle = eventually(stack, lambda s: s["workers"] == 1, "a worker reported")
    assert idle == {"queue": stack.env["QUEUE_NAME"], "waiting": 0, "oldest_waiting_seconds": 0.0, "running": 0,
                    "slots": 4, "busy_slots": 0, "workers": 1, "demand": 0}  # fmt: skip
    fake.latency = 4
    for index in range(6):
        accepted = httpx.post(f"{stack.url}/generate", json={"job_id": f"busy-{index}", "content": "x"},
                              headers={"Prefer": "respond-async"}, timeout=10)  # fmt: skip
        assert accepted.status_code == 202
    busy = eventually(stack, lambda s: s["busy_slots"] == 4 and s["waiting"] == 2, "4 running and 2 waiting")
    assert busy["running"] == 4 and busy["slots"] == 4 and busy["demand"] == 6
    assert busy["oldest_waiting_seconds"] > 0
    later = eventually(stack, lambda s: s["oldest_waiting_seconds"] > busy["oldest_waiting_seconds"] + 0.5,
                       "the oldest job's wait growing")  # fmt: skip
    assert later["waiting"] == 2
    shown = gauges(stack)
    assert shown["llm_api_model_worker_slots"] == 4 and shown["llm_api_model_workers"] == 1
    assert shown["llm_api_model_demand"] >= 2
    fake.latency = 0
    done = eventually(stack, lambda s: s["demand"] == 0, "every job done", seconds=30)
    assert done["oldest_waiting_seconds"] == 0.0 and done["running"] == 0


@pytest.mark.integration
def test_a_worker_that_leaves_or_dies_takes_its_slots_away(make_stack: StackFactory, fake: FakeModelServer) -> None:
    stack = make_stack(workers=2, concurrency=3, WORKER_REPORT_SECONDS="0.3")
    eventually(stack, lambda s: s["workers"] == 2 and s["slots"] == 6, "two workers reported")
    first, second = stack.processes.started[:2]
    first.stop()  # SIGTERM: it withdraws its slots as it stops
    assert signals(stack)["slots"] == 3
    second.kill()  # SIGKILL: its report goes stale within three intervals
    gone = eventually(stack, lambda s: s["workers"] == 0, "the dead worker's report dropped", seconds=5)
    assert gone["slots"] == 0
