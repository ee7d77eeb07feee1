"""The spec's endpoints through the whole pipeline: API → RabbitMQ → worker → model server → Redis."""

from __future__ import annotations

import asyncio
import json
import subprocess
import textwrap
import uuid
from pathlib import Path

import httpx
import pytest
import redis
from kombu import Connection

from api.native.types import DEFAULT_PRIORITY
from shared.broker.settings import priority_for
from testing.fake_model_server import FakeModelServer, free_port
from testing.processes import ROOT, VENV_BIN, Processes
from tests.conftest import Stack, StackFactory

pytestmark = pytest.mark.integration

# The spec's two curl examples, verbatim.
SPEC_GENERATE = """{
  "job_id": "12345",
  "meta": {
    "temperature": 0.5,
    "tokens_limit": 1000,
    "stop_words": ["stop"],
    "model": "gpt-model"
  },
  "content": "What is AI?"
}"""
SPEC_CHAT = """{
  "job_id": "12345",
  "meta": {
    "temperature": 0.5,
    "tokens_limit": 1000,
    "stop_words": ["stop"],
    "model": "gpt-model"
  },
  "messages": [
    {"role": "user", "content": "What is AI?"},
    {"role": "assistant", "content": "Artificial Intelligence is..."}
  ]
}"""


# The spec examples' meta, as the model server must receive it.
SPEC_META_SENT = {"temperature": 0.5, "max_tokens": 1000, "stop": ["stop"], "model": "gpt-model"}


def mapped_meta(sent: dict[str, object]) -> dict[str, object]:
    return {key: sent.get(key) for key in SPEC_META_SENT}


def curl(url: str, body: str) -> tuple[int, dict[str, object]]:
    """POST as the spec's examples do, with curl itself."""
    out = subprocess.run(
        [
            "curl",
            "-s",
            "-X",
            "POST",
            url,
            "-H",
            "Content-Type: application/json",
            "-d",
            body,
            "-w",
            "\n%{http_code}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    text, status = out.rsplit("\n", 1)
    return int(status), json.loads(text)


def unique(body: str, job_id: str) -> str:
    return body.replace('"12345"', json.dumps(job_id))


def test_spec_generate_example_works_as_written(stack: Stack, fake: FakeModelServer) -> None:
    status, answer = curl(f"{stack.url}/generate", SPEC_GENERATE)
    assert (status, answer) == (200, {"content": "echo: What is AI?", "job_id": "12345"})
    (sent,) = fake.completions
    assert sent["messages"] == [{"role": "user", "content": "What is AI?"}]
    assert mapped_meta(sent) == SPEC_META_SENT


def test_spec_chat_example_works_as_written(stack: Stack, fake: FakeModelServer) -> None:
    status, answer = curl(f"{stack.url}/chat_completion", unique(SPEC_CHAT, "chat-12345"))
    assert (status, answer) == (
        200,
        {"content": "echo: Artificial Intelligence is...", "job_id": "chat-12345"},
    )
    (sent,) = fake.completions
    assert sent["messages"] == json.loads(SPEC_CHAT)["messages"]
    assert mapped_meta(sent) == SPEC_META_SENT


def test_meta_defaults_are_the_specs(stack: Stack, fake: FakeModelServer) -> None:
    answer = httpx.post(f"{stack.url}/generate", json={"content": "hello"}, timeout=30)
    assert answer.status_code == 200
    assert answer.json()["content"] == "echo: hello"
    assert answer.json()["job_id"]
    (sent,) = fake.completions
    assert (sent["temperature"], sent["max_tokens"]) == (0.2, 8096)
    assert "stop" not in sent


def test_default_tokens_limit_beyond_the_models_context_is_still_answered(stack: Stack, fake: FakeModelServer) -> None:
    fake.context_size = 2048
    answer = httpx.post(f"{stack.url}/generate", json={"content": "hello there"}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["content"] == "echo: hello there"
    assert [c.get("max_tokens") for c in fake.completions] == [8096, 2048 - 6]


def test_results_are_stored_under_redis_prefix(stack: Stack, fake: FakeModelServer) -> None:
    job_id = f"prefix-check-{uuid.uuid4().hex}"  # no other run's keys hold it
    assert httpx.post(f"{stack.url}/generate", json={"job_id": job_id, "content": "x"}, timeout=30).status_code == 200
    store = redis.Redis(host=stack.config.redis_host, port=stack.config.redis_port)
    keys = {k.decode() for k in store.scan_iter(match=f"*{job_id}*")}
    prefix = stack.env["REDIS_PREFIX"]
    # Its lease and its claim's hash are deleted with its result: the answer (with what
    # the claim held that a client still reads) is what stays.
    assert keys == {f"{prefix}:celery-task-meta-{job_id}"}
    assert all(store.ttl(key) > 0 for key in keys)  # nothing lives forever
    stored = json.loads(store.get(f"{prefix}:celery-task-meta-{job_id}") or b"{}")
    # The answer's text once, in its first choice (GET /jobs/{id} gives it whole).
    assert (stored["status"], stored["result"]["choices"][0]["content"], stored["name"]) == (
        "SUCCESS",
        "echo: x",
        "llm.generate",
    )
    assert 0 < store.ttl(f"{prefix}:celery-task-meta-{job_id}") <= 86400


def test_jobs_wait_in_the_durable_queue_named_queue_name(make_stack: StackFactory, fake: FakeModelServer) -> None:
    stack = make_stack(workers=0, WAIT_TIMEOUT="1")
    answer = httpx.post(f"{stack.url}/generate", json={"job_id": "queued-1", "content": "x"}, timeout=30)
    assert answer.status_code == 504
    assert "queued-1" in answer.json()["detail"]
    config = stack.config
    if config.uses_rabbitmq:
        with Connection(config.broker_url) as connection:
            channel = connection.default_channel
            # Declaring it durable again fails if the queue exists and is not durable.
            _, waiting, _ = channel.queue_declare(
                config.queue_name, durable=True, auto_delete=False, arguments={"x-max-priority": 10}
            )
            assert waiting == 1
            message = channel.basic_get(config.queue_name, no_ack=True)
        properties, headers = message.properties, message.headers
    else:
        # Kombu's Redis transport: a list per priority named after the queue, under the key prefix.
        store = redis.Redis(host=config.redis_host, port=config.redis_port)
        queue_key = f"{config.key_prefix}{config.queue_name}:{priority_for(config, DEFAULT_PRIORITY)}"
        assert store.llen(queue_key) == 1
        envelope = json.loads(store.lpop(queue_key) or b"{}")
        properties, headers = envelope["properties"], envelope["headers"]
    assert properties["delivery_mode"] == 2
    assert headers["task"] == "llm.generate"
    assert headers["id"] == "queued-1"
    assert fake.completions == []


def test_many_waiting_requests_keep_the_model_server_busy_and_the_api_responsive(
    stack: Stack, fake: FakeModelServer
) -> None:
    fake.latency = 1.0

    async def scenario() -> tuple[list[httpx.Response], httpx.Response, int, int]:
        limits = httpx.Limits(max_connections=300, max_keepalive_connections=300)
        async with httpx.AsyncClient(base_url=stack.url, timeout=60, limits=limits) as client:
            jobs = [
                asyncio.create_task(client.post("/generate", json={"content": f"question {i}"})) for i in range(200)
            ]
            while fake.in_flight < 32:  # noqa: ASYNC110 - the fake server runs in another thread
                await asyncio.sleep(0.01)
            health = await client.get("/health")
            in_flight_then = fake.in_flight
            finished_then = sum(job.done() for job in jobs)
            return await asyncio.gather(*jobs), health, in_flight_then, finished_then

    answers, health, in_flight_then, finished_then = asyncio.run(scenario())
    assert [a.status_code for a in answers] == [200] * 200, {a.text for a in answers if a.status_code != 200}
    assert [a.json()["content"] for a in answers] == [f"echo: question {i}" for i in range(200)]
    assert len({a.json()["job_id"] for a in answers}) == 200
    assert len(fake.completions) == 200
    assert fake.peak_in_flight >= 32
    # The event loop answered while the model server still held the first batch.
    assert health.status_code == 200
    assert in_flight_then >= 32 and finished_then == 0


def test_the_specs_usage_snippet_serves_the_endpoints(stack: Stack, fake: FakeModelServer, tmp_path: Path) -> None:
    (tmp_path / "spec_app.py").write_text(
        textwrap.dedent(
            """
            from fastapi import FastAPI

            from api import Config, get_router

            app = FastAPI()

            config = Config.read_from_env()

            app.include_router(get_router(config))
            """
        )
    )
    port = free_port()
    processes = Processes(tmp_path)
    env = {**stack.env, "PYTHONPATH": f"{tmp_path}:{ROOT}"}
    process = processes.spawn("spec-app", [str(VENV_BIN / "uvicorn"), "spec_app:app", "--port", str(port)], env)
    try:
        from testing.processes import wait_for_http

        wait_for_http(process, f"http://127.0.0.1:{port}/openapi.json")
        answer = httpx.post(f"http://127.0.0.1:{port}/generate", json={"content": "snippet"}, timeout=30)
        assert (answer.status_code, answer.json()["content"]) == (200, "echo: snippet")
    finally:
        processes.stop_all()
