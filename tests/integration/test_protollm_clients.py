"""ProtoLLM's own clients, unchanged: its SDK (`protollm-sdk`'s `LLMAPI`) and its
LangChain connector (`ChatRESTServer` in `protollm`), through the real pipeline.

The bodies are the ones those clients sent, recorded in tests/fixtures/protollm/ by
tests/fixtures/protollm/record.py, run in a throwaway virtualenv (the SDK pins an older
pydantic and httpx, the connector's package brings a large set of dependencies; the
script's docstring says how). Each is sent here byte for byte as recorded, to the path
and with the query the client used (`QUEUE_NAME` in a recorded query stands for the
deployment's queue name).

What the clients make of our answers: the SDK reads a 200 as its `ResponseModel`
(`content`, a string), turns 422 into `ValueError` and 500 into `ConnectionError`, and
reads anything else as a `ResponseModel` too, failing with the body in its message; the
connector reads `content` from a 200, and reports any other status with its body.
So every error here is a JSON `detail` saying what is wrong, and never has `content`.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from testing.fake_model_server import FakeModelServer
from testing.processes import ROOT
from tests.conftest import Stack, StackFactory
from tests.integration.test_models import registry_json

pytestmark = pytest.mark.integration

FIXTURES = ROOT / "tests" / "fixtures" / "protollm"
RECORDED = {path.stem: json.loads(path.read_text()) for path in sorted(FIXTURES.glob("*.json"))}


def send(stack: Stack, recorded: dict[str, Any], **changes: Any) -> httpx.Response:
    query = {k: stack.config.queue_name if v == "QUEUE_NAME" else v for k, v in recorded["query"].items()}
    body = {**recorded["body"], **changes}
    return httpx.post(
        f"{stack.url}{recorded['path']}",
        params=query,
        content=json.dumps(body).encode(),
        headers={"Content-Type": recorded["content_type"]},
        timeout=30,
    )


def test_the_fixtures_are_the_clients_own() -> None:
    assert set(RECORDED) >= {"sdk_generate_defaults", "sdk_generate_queue_name", "sdk_chat", "connector_chat"}
    defaults = RECORDED["sdk_generate_defaults"]["body"]
    # What a default PromptMeta() sends: the nulls that used to be refused.
    assert defaults["priority"] is None and defaults["meta"]["stop_words"] is None and defaults["meta"]["model"] is None
    assert RECORDED["connector_chat"]["body"]["source"] == "local"


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_each_recorded_body_is_answered_as_its_client_expects(name: str, stack: Stack, fake: FakeModelServer) -> None:
    recorded = RECORDED[name]
    answer = send(stack, recorded)
    assert answer.status_code == 200, answer.text
    body = recorded["body"]
    prompt = body["content"] if "content" in body else body["messages"][-1]["content"]
    assert answer.json() == {"content": f"echo: {prompt}", "job_id": body["job_id"]}
    # What reached the model server: the values given, the defaults for the nulls.
    (sent,) = fake.completions
    meta = body["meta"]
    assert sent["temperature"] == (0.2 if meta["temperature"] is None else meta["temperature"])
    assert sent["max_tokens"] == (8096 if meta["tokens_limit"] is None else meta["tokens_limit"])
    assert sent.get("stop") == (meta["stop_words"] or None)


def test_a_missing_meta_means_every_default(stack: Stack, fake: FakeModelServer) -> None:
    answer = httpx.post(f"{stack.url}/generate", json={"job_id": "no-meta-1", "content": "x", "priority": None})
    assert answer.status_code == 200, answer.text
    (sent,) = fake.completions
    assert (sent["temperature"], sent["max_tokens"], sent.get("stop")) == (0.2, 8096, None)


def test_an_unknown_queue_name_is_404_naming_the_known_queues(stack: Stack, fake: FakeModelServer) -> None:
    answer = send(stack, RECORDED["sdk_generate_queue_name"], job_id="protollm-queue-404")
    assert answer.status_code == 200  # QUEUE_NAME itself: the default model
    recorded = {**RECORDED["sdk_generate_queue_name"], "query": {"queue_name": "nobody-consumes-this"}}
    refused = send(stack, recorded, job_id="protollm-queue-unknown")
    assert refused.status_code == 404
    detail = refused.json()["detail"]
    assert "'nobody-consumes-this'" in detail and stack.config.queue_name in detail
    assert "content" not in refused.json()
    assert len(fake.completions) == 1  # nothing was queued for the unknown queue


def test_queue_name_routes_to_the_model_of_that_queue(
    make_stack: StackFactory, fake: FakeModelServer, tmp_path: Path
) -> None:
    large = FakeModelServer().start()
    large.models = ["large-model"]
    try:
        stack = make_stack(MODELS=registry_json(fake.url, large.url))
        config = stack.config
        recorded = RECORDED["sdk_generate_queue_name"]
        to_large = {**recorded, "query": {"queue_name": f"{config.queue_name}.large"}}
        assert send(stack, to_large, job_id="to-large").status_code == 200
        assert [body["model"] for body in large.completions] == ["large-model"] and fake.completions == []
        # QUEUE_NAME is the default model's.
        assert send(stack, recorded, job_id="to-default").status_code == 200
        assert [body["model"] for body in fake.completions] == ["fake-model"]
        # A queue and a model that disagree: the caller's error, said as such (the SDK's ValueError).
        both = send(stack, to_large, job_id="both", meta={**recorded["body"]["meta"], "model": "small"})
        assert both.status_code == 422 and "queue_name" in both.json()["detail"]
        # Agreeing: fine.
        agreed = send(stack, to_large, job_id="agreed", meta={**recorded["body"]["meta"], "model": "large"})
        assert agreed.status_code == 200 and len(large.completions) == 2
    finally:
        large.stop()


def test_a_top_level_priority_orders_the_queue(make_stack: StackFactory, fake: FakeModelServer) -> None:
    stack = make_stack(workers=0)
    recorded = RECORDED["sdk_generate_defaults"]

    async def submit(jobs: list[tuple[str, int | None, int | None]]) -> None:
        async with httpx.AsyncClient(base_url=stack.url, timeout=30) as client:
            for job_id, priority, meta_priority in jobs:
                meta = dict(recorded["body"]["meta"])
                if meta_priority is not None:
                    meta["priority"] = meta_priority
                body = {**recorded["body"], "job_id": job_id, "content": job_id, "priority": priority, "meta": meta}
                assert (await client.post("/generate?wait=0", json=body)).status_code == 202

    # Batch work at ProtoLLM's priority 0; then urgent ones at 9, and one that says 9 at
    # the top and 0 in meta (meta wins: it waits with the batch).
    asyncio.run(submit([(f"low-{i}", 0, None) for i in range(30)]))
    asyncio.run(submit([("meta-wins", 9, 0), *((f"high-{i}", 9, None) for i in range(3))]))
    stack.processes.worker(stack.env, concurrency=1)
    deadline = time.monotonic() + 60
    while len(fake.completions) < 34 and time.monotonic() < deadline:
        time.sleep(0.2)
    order = [body["messages"][-1]["content"] for body in fake.completions]
    assert len(order) == 34
    # A worker holds one job beyond the one it runs: at most those run first.
    assert max(order.index(f"high-{i}") for i in range(3)) < 5, order[:8]
    assert order.index("meta-wins") > 20, order
