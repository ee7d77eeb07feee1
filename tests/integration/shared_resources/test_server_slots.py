"""Server slots: a model's servers' slots are taken by tenants in turns by weight, and
no tenant's priority rises above its `max_priority`, so a backlog waiting for a slot is
its owner's wait alone."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from testing.fake_model_server import FakeModelServer
from tests.conftest import Stack, StackFactory
from tests.faults.test_fair_share import wait_all

pytestmark = pytest.mark.integration

TENANTS = """
tenants:
  - name: alpha
    keys: ["key-alpha"]
  - name: beta
    keys: ["key-beta"]
  - name: ops
    admin: true
    keys: ["key-ops"]
"""
BACKLOG = 32


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def two_slots(
    make_stack: StackFactory, servers: Any, broker_env: dict[str, str], tmp_path: Path
) -> tuple[Stack, FakeModelServer]:
    """A model of two servers of one slot each (one fake server behind both names, so
    its list of calls is their order), and a worker holding jobs enough for a backlog."""
    if not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("once is enough: the line for a server's slot is in Redis, whichever the broker")
    one = servers()
    keys_file = tmp_path / "tenants.yaml"
    keys_file.write_text(TENANTS)
    slots = [{"url": one.url, "slots": 1, "name": "s1"}, {"url": one.url, "slots": 1, "name": "s2"}]
    # vLLM's priority field sent: the priority a job runs at is what the server is told.
    models = json.dumps({"models": [{"name": "m", "servers": slots, "priority_scheduling": True}]})
    return make_stack(API_KEYS_FILE=str(keys_file), MODELS=models, concurrency=BACKLOG + 8), one


def chat(stack: Stack, key: str, content: str) -> dict[str, Any]:
    body = {"model": "m", "messages": [{"role": "user", "content": content}]}
    answer = httpx.post(f"{stack.url}/v1/chat/completions", json=body, headers=auth(key), timeout=120)
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"] == f"echo: {content}"
    return answer.json()


def backlog(stack: Stack, priority: int | None = None) -> list[str]:
    """alpha's jobs, sent without waiting."""
    job_ids = [f"alpha-{n}" for n in range(BACKLOG)]
    for job_id in job_ids:
        meta = {} if priority is None else {"priority": priority}
        body = {"job_id": job_id, "content": job_id, "meta": meta}
        answer = httpx.post(f"{stack.url}/generate?wait=0", json=body, headers=auth("key-alpha"), timeout=30)
        assert answer.status_code == 202, answer.text
    return job_ids


def called_or_in_line(stack: Stack, server: FakeModelServer, jobs: int) -> None:
    """Returns once `jobs` jobs were called or wait in line for a slot (/scaling)."""
    deadline = time.monotonic() + 60
    while True:
        shown = httpx.get(f"{stack.url}/scaling", headers=auth("key-ops"), timeout=10).json()
        if shown["models"]["m"]["waiting_for_server"] + len(server.completions) >= jobs:
            return
        assert time.monotonic() < deadline, shown
        time.sleep(0.05)


def billed(stack: Stack, key: str, jobs: int) -> int:
    """The tenant's tokens in /usage once `jobs` of its jobs are counted."""
    deadline = time.monotonic() + 30
    while True:
        rows = httpx.get(f"{stack.url}/usage", headers=auth(key), timeout=10).json()["data"]
        if sum(row["jobs"] for row in rows) >= jobs or time.monotonic() > deadline:
            return sum(row["total_tokens"] for row in rows)
        time.sleep(0.2)


def received(server: FakeModelServer) -> list[str]:
    return [body["messages"][-1]["content"] for body in server.completions]


def beside_backlog(stack: Stack, server: FakeModelServer, priority: int | None) -> None:
    """beta's job beside alpha's backlog, then alone: the same answer and bill, and,
    beside it, one of the first slots given back."""
    # The server's calls take long while the line is built (on a loaded machine the
    # backlog would otherwise drain as fast as it is sent), and are quick once beta's
    # job is in line: what it waits for is decided by the line alone.
    server.latency = 3.0
    alphas = backlog(stack, priority)
    called_or_in_line(stack, server, BACKLOG)
    before = len(server.completions)  # alpha's jobs already called when beta's was sent
    with ThreadPoolExecutor(1) as pool:
        asked = pool.submit(chat, stack, "key-beta", "beta-1")
        called_or_in_line(stack, server, BACKLOG + 1)
        server.latency = 0.05
        beside = asked.result()
    calls = received(server)
    # Without turns it would wait for the whole backlog (its 30 calls left at two slots).
    ahead = [job for job in calls[before : calls.index("beta-1")] if job.startswith("alpha-")]
    assert len(ahead) <= 2, ahead
    assert set(wait_all(stack.url, alphas, key="key-alpha").values()) == {"succeeded"}
    alone = chat(stack, "key-beta", "beta-2")
    assert beside["usage"] == alone["usage"]
    assert billed(stack, "key-beta", 2) == 2 * alone["usage"]["total_tokens"]
    assert sorted(received(server)) == sorted([*alphas, "beta-1", "beta-2"])  # each once


def test_hostile_tenant_beside_normal_keeps_its_backlog_for_a_slot_to_itself(
    make_stack: StackFactory, servers: Any, broker_env: dict[str, str], tmp_path: Path
) -> None:
    stack, server = two_slots(make_stack, servers, broker_env, tmp_path)
    beside_backlog(stack, server, priority=None)


def test_hostile_tenant_beside_normal_cannot_jump_its_jobs_by_priority(
    make_stack: StackFactory, servers: Any, broker_env: dict[str, str], tmp_path: Path
) -> None:
    # alpha sends its whole backlog at priority 9; its tenants' highest is the
    # deployment's default, 5 (TENANT_MAX_PRIORITY): its jobs run at 5, beside beta's.
    stack, server = two_slots(make_stack, servers, broker_env, tmp_path)
    beside_backlog(stack, server, priority=9)
    told = {body["priority"] for body in server.completions if body["messages"][-1]["content"].startswith("alpha-")}
    assert told == {9 - 5}  # vLLM's order: lower is sooner; our 5 is its 4
