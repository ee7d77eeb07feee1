"""Flower, on the same broker, shows the workers and each job with its name, arguments and
result; embedding jobs' aside (their task events cost too much for a share of one call)."""

from __future__ import annotations

import time

import httpx
import pytest

from testing.fake_model_server import FakeModelServer, free_port
from testing.processes import VENV_BIN, wait_for_http
from tests.conftest import StackFactory

pytestmark = pytest.mark.integration


def test_flower_shows_workers_and_tasks(make_stack: StackFactory, fake: FakeModelServer) -> None:
    stack = make_stack()
    port = free_port()
    flower = stack.processes.spawn(
        "flower",
        [str(VENV_BIN / "celery"), "-A", "tasks.app", "flower", f"--port={port}", "--address=127.0.0.1"],
        {**stack.env, "FLOWER_BASIC_AUTH": "admin:secret-pass"},
    )
    base = f"http://127.0.0.1:{port}"
    wait_for_http(flower, f"{base}/healthcheck")
    auth = ("admin", "secret-pass")
    assert httpx.get(f"{base}/api/workers", timeout=10).status_code == 401

    deadline = time.monotonic() + 30
    while not httpx.get(f"{base}/api/workers", auth=auth, timeout=10).json():
        assert time.monotonic() < deadline, "Flower never saw the worker"
        time.sleep(0.5)

    embedded = httpx.post(
        f"{stack.url}/v1/embeddings", json={"input": "unwatched"}, headers={"Idempotency-Key": "flower-0"}, timeout=30
    )
    assert embedded.status_code == 200
    answer = httpx.post(f"{stack.url}/generate", json={"job_id": "flower-1", "content": "watched"}, timeout=30)
    assert answer.status_code == 200
    while True:
        task = httpx.get(f"{base}/api/task/info/flower-1", auth=auth, timeout=10)
        if task.status_code == 200 and task.json().get("state") == "SUCCESS":
            break
        assert time.monotonic() < deadline, f"Flower never showed the task: {task.text}"
        time.sleep(0.5)
    info = task.json()
    # The worker's events arrive in order: the embedding job, run before, sent none.
    assert httpx.get(f"{base}/api/task/info/flower-0", auth=auth, timeout=10).status_code == 404
    assert info["name"] == "llm.generate"
    assert "watched" in info["args"]
    assert "echo: watched" in info["result"]
    # Flower's questions to the workers (their settings, among others) were answered.
    worker = next(p for p in stack.processes.started if p.name.startswith("worker"))
    assert "Control command error" not in worker.output()
