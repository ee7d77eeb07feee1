"""Queue turns: a model's queue is taken by tenants in turns, so a backlog is its owner's wait alone."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from testing.fake_model_server import FakeModelServer
from tests.conftest import StackFactory
from tests.faults.test_fair_share import auth, fair_stack, saturate, started, submit, wait_all

pytestmark = pytest.mark.integration


def usage_tokens(url: str, key: str, jobs: int) -> int:
    """The tenant's billed tokens once `jobs` of its jobs are counted."""
    deadline = time.monotonic() + 30
    while True:
        rows = httpx.get(f"{url}/usage", headers=auth(key), timeout=10).json()["data"]
        if sum(row["jobs"] for row in rows) >= jobs or time.monotonic() > deadline:
            return sum(row["total_tokens"] for row in rows)
        time.sleep(0.2)


def test_hostile_tenant_beside_normal_keeps_its_backlog_to_itself(
    make_stack: StackFactory, fake: FakeModelServer, tmp_path: Path
) -> None:
    fake.latency = 0.2
    stack = fair_stack(make_stack, tmp_path)
    saturate(stack, fake)
    backlog = [f"heavy-{n}" for n in range(40)]
    for job_id in backlog:
        submit(stack.url, "key-heavy", job_id)
    before = len(fake.completions)  # the jobs started before light's was sent
    body = {"messages": [{"role": "user", "content": "light-1"}]}
    answer = httpx.post(f"{stack.url}/v1/chat/completions", json=body, headers=auth("key-light"), timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"] == "echo: light-1"
    # Its place in line: without turns it would start after what is left of the 40 (at
    # 2 slots of 0.2 s); it starts once the few jobs already in the model's queue have.
    order = started(fake)
    ahead = [job for job in order[before : order.index("light-1")] if job.startswith("heavy-")]
    assert len(ahead) <= 4, ahead
    # Its bill is its own job's tokens, as its answer reported them.
    assert usage_tokens(stack.url, "key-light", 1) == answer.json()["usage"]["total_tokens"]
    assert set(wait_all(stack.url, backlog).values()) == {"succeeded"}
    runs = Counter(started(fake))
    assert runs["light-1"] == 1 and all(runs[job_id] == 1 for job_id in backlog)
