"""Several models behind one gateway: each job reaches its model's queue, workers and server."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import httpx
import pytest

from testing.fake_model_server import FakeModelServer
from tests.conftest import StackFactory

pytestmark = pytest.mark.integration


@pytest.fixture
def second_server() -> Iterator[FakeModelServer]:
    server = FakeModelServer().start()
    server.models = ["large-model"]
    yield server
    server.stop()


def registry_json(small: str, large: str) -> str:
    return json.dumps(
        {
            "models": [
                {"name": "small", "aliases": ["quick"], "url": small, "served_name": "fake-model"},
                {"name": "large", "url": large, "served_name": "large-model"},
            ],
            "default": "small",
        }
    )


def test_each_model_has_its_queue_workers_and_server(
    make_stack: StackFactory, fake: FakeModelServer, second_server: FakeModelServer
) -> None:
    stack = make_stack(workers=0, MODELS=registry_json(fake.url, second_server.url))
    small = stack.processes.worker({**stack.env, "WORKER_MODELS": "small"}, name="small-worker")
    stack.processes.worker({**stack.env, "WORKER_MODELS": "large"}, name="large-worker")

    def ask(model: str | None, content: str, **params: str) -> httpx.Response:
        meta = {"model": model} if model else {}
        return httpx.post(f"{stack.url}/generate", params=params, json={"content": content, "meta": meta}, timeout=30)

    assert ask("small", "a").json()["content"] == "echo: a"
    assert ask("quick", "b").json()["content"] == "echo: b"  # an alias
    assert ask(None, "c").json()["content"] == "echo: c"  # the default
    assert ask("large", "d").json()["content"] == "echo: d"
    assert [b["messages"][-1]["content"] for b in fake.completions] == ["a", "b", "c"]
    assert [b["model"] for b in fake.completions] == ["fake-model"] * 3  # the name its server knows
    assert [(b["messages"][-1]["content"], b["model"]) for b in second_server.completions] == [("d", "large-model")]
    # OpenAI's endpoint routes the same way.
    chat = httpx.post(
        f"{stack.url}/v1/chat/completions",
        json={"model": "large", "messages": [{"role": "user", "content": "e"}]},
        timeout=30,
    )
    assert chat.status_code == 200 and len(second_server.completions) == 2
    # The API's log names the registry's model, not the name its server knows it by.
    api_log = next(p for p in stack.processes.started if p.name == "api").output()
    lines = [json.loads(line[line.index("{") :]) for line in api_log.splitlines() if '"api.access"' in line]
    assert [line["model"] for line in lines] == ["small", "small", "small", "large", "large"]

    unknown = ask("huge", "f")
    assert unknown.status_code == 404
    assert "'huge'" in unknown.json()["detail"] and "small, quick, large" in unknown.json()["detail"]
    listed = httpx.get(f"{stack.url}/models", timeout=10).json()
    assert [(m["name"], m["default"]) for m in listed["models"]] == [("small", True), ("large", False)]
    cards = httpx.get(f"{stack.url}/v1/models", timeout=10).json()["data"]
    assert [card["id"] for card in cards] == ["small", "quick", "large"]

    # Without its worker, a model's jobs wait in its queue; the other model goes on.
    small.stop()
    waiting = ask("small", "g", wait="1")
    assert waiting.status_code == 504
    assert ask("large", "h").json()["content"] == "echo: h"
    assert len(fake.completions) == 3
    stack.processes.worker({**stack.env, "WORKER_MODELS": "small"}, name="small-again")
    job_id = waiting.headers["location"].rsplit("/", 1)[-1]
    collected = httpx.post(
        f"{stack.url}/generate", json={"job_id": job_id, "content": "g", "meta": {"model": "small"}}, timeout=30
    )
    assert collected.json()["content"] == "echo: g"


def test_urgent_jobs_overtake_a_backlog(make_stack: StackFactory, fake: FakeModelServer) -> None:
    stack = make_stack(workers=0)
    fake.latency = 0.01

    async def submit(jobs: list[tuple[str, int]]) -> None:
        async with httpx.AsyncClient(base_url=stack.url, timeout=30) as client:
            for job_id, priority in jobs:
                body = {"job_id": job_id, "content": job_id, "meta": {"priority": priority}}
                assert (await client.post("/generate?wait=0", json=body)).status_code == 202

    asyncio.run(submit([(f"batch-{i}", 0) for i in range(200)]))
    asyncio.run(submit([(f"urgent-{i}", 9) for i in range(10)]))
    stack.processes.worker(stack.env, concurrency=1)
    deadline = time.monotonic() + 60
    while len(fake.completions) < 210 and time.monotonic() < deadline:
        time.sleep(0.2)
    order = [body["messages"][-1]["content"] for body in fake.completions]
    assert len(order) == 210
    urgent_at = [order.index(f"urgent-{i}") for i in range(10)]
    print(f"\n[priorities] urgent jobs finished at positions {sorted(urgent_at)} of 210")
    # A worker holds one job beyond the one it runs: at most those run first.
    assert max(urgent_at) < 15, sorted(urgent_at)


@pytest.mark.integration
def test_a_model_whose_server_schedules_by_priority_gets_each_jobs_priority(
    make_stack: StackFactory, fake: FakeModelServer
) -> None:
    models = {
        "models": [
            {"name": "vllm", "url": fake.url, "served_name": "fake-model", "priority_scheduling": True},
            {"name": "plain", "url": fake.url, "served_name": "fake-model", "queue": "plain-queue"},
        ]
    }
    stack = make_stack(MODELS=json.dumps(models))
    sent = [
        ("urgent", {"content": "urgent", "meta": {"model": "vllm", "priority": 9}}),
        ("usual", {"content": "usual", "meta": {"model": "vllm"}}),
        ("batch", {"content": "batch", "meta": {"model": "vllm", "priority": 0}}),
        ("plain", {"content": "plain", "meta": {"model": "plain", "priority": 9}}),
    ]
    for _, body in sent:
        assert httpx.post(f"{stack.url}/generate", json=body, timeout=30).status_code == 200
    received = {r["messages"][-1]["content"]: r for r in fake.completions}
    assert [received[name].get("priority") for name in ("urgent", "usual", "batch")] == [0, 4, 9]
    assert "priority" not in received["plain"]  # a server that does not schedule by it is not sent one
