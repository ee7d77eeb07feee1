"""Each failure gets its own status code and a message saying what happened."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import httpx
import pytest

from testing.fake_model_server import Failure, FakeModelServer, free_port
from testing.openai_sdk import chat_line
from tests.conftest import Stack, StackFactory


@pytest.mark.integration
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"meta": {}}, "content"),
        ({"content": "x", "meta": {"temperature": 7}}, "temperature"),
        ({"content": "x", "meta": {"tokens_limit": 0}}, "tokens_limit"),
        ({"content": "x", "meta": {"stop_words": "stop"}}, "stop_words"),
    ],
)
def test_invalid_body_is_422_naming_the_field(stack: Stack, fake: FakeModelServer, body: dict, field: str) -> None:
    answer = httpx.post(f"{stack.url}/generate", json=body, timeout=10)
    assert answer.status_code == 422
    assert field in {str(part) for error in answer.json()["detail"] for part in error["loc"]}
    assert fake.completions == []


@pytest.mark.integration
def test_chat_without_messages_is_422(stack: Stack, fake: FakeModelServer) -> None:
    answer = httpx.post(f"{stack.url}/chat_completion", json={"messages": []}, timeout=10)
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body", "messages"]


@pytest.mark.integration
def test_unknown_model_is_refused_naming_the_served_models(stack: Stack, fake: FakeModelServer) -> None:
    fake.strict_models = True
    fake.models = ["qwen-7b", "llama-3-8b"]
    answer = httpx.post(f"{stack.url}/generate", json={"content": "x", "meta": {"model": "gpt-model"}}, timeout=30)
    assert answer.status_code == 404
    assert "gpt-model" in answer.json()["detail"]
    assert "qwen-7b, llama-3-8b" in answer.json()["detail"]


@pytest.mark.integration
def test_model_server_bad_request_is_passed_on(stack: Stack, fake: FakeModelServer) -> None:
    fake.failures = [Failure(400, {"error": {"message": "top_k must be positive", "type": "BadRequestError"}})]
    answer = httpx.post(f"{stack.url}/generate", json={"content": "x"}, timeout=30)
    assert (answer.status_code, answer.json()["detail"]) == (400, "top_k must be positive")
    assert len(fake.completions) == 1


@pytest.mark.integration
def test_failing_model_server_is_retried_then_502(stack: Stack, fake: FakeModelServer) -> None:
    fake.failures = [Failure(500, {"error": {"message": "CUDA out of memory"}})] * 3
    answer = httpx.post(f"{stack.url}/generate", json={"content": "x"}, timeout=30)
    assert answer.status_code == 502
    assert "500" in answer.json()["detail"] and "CUDA out of memory" in answer.json()["detail"]
    assert len(fake.completions) == 3  # LLM_MAX_RETRIES=2


@pytest.mark.integration
def test_transient_failures_are_retried_to_success(stack: Stack, fake: FakeModelServer) -> None:
    fake.failures = [Failure(503, {"error": {"message": "loading"}}), Failure(429, {}, {"Retry-After": "0"})]
    answer = httpx.post(f"{stack.url}/generate", json={"content": "eventually"}, timeout=30)
    assert (answer.status_code, answer.json()["content"]) == (200, "echo: eventually")
    assert len(fake.completions) == 3


@pytest.mark.integration
def test_unreachable_model_server_is_502(make_stack: StackFactory, fake: FakeModelServer) -> None:
    port = free_port()
    stack = make_stack(INNER_LLM_URL=f"127.0.0.1:{port}", DEFAULT_MODEL="small")
    answer = httpx.post(f"{stack.url}/generate", json={"content": "x"}, timeout=30)
    assert answer.status_code == 502
    assert "model server unreachable (model 'small')" in answer.json()["detail"]
    # Which part failed, never where it lives: the address is in the worker's log.
    assert str(port) not in answer.text and "127.0.0.1" not in answer.text
    assert f"127.0.0.1:{port}" in stack.processes.started[0].output()


@pytest.mark.integration
def test_slow_jobs_and_slow_model_servers_are_504(make_stack: StackFactory, fake: FakeModelServer) -> None:
    stack = make_stack(WAIT_TIMEOUT="1")
    fake.latency = 2
    answer = httpx.post(f"{stack.url}/generate", json={"job_id": "slow-1", "content": "x"}, timeout=30)
    assert answer.status_code == 504
    assert "slow-1" in answer.json()["detail"]
    stack_patient = make_stack(WAIT_TIMEOUT="30", LLM_TIMEOUT="0.5", LLM_MAX_RETRIES="0")
    answer = httpx.post(f"{stack_patient.url}/generate", json={"content": "x"}, timeout=30)
    assert answer.status_code == 504
    assert "timed out" in answer.json()["detail"] and "model server" in answer.json()["detail"]


@pytest.mark.integration
def test_unreachable_broker_is_a_quick_503(make_stack: StackFactory, broker_env: dict[str, str]) -> None:
    if not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("with the Valkey broker, the broker is the result store: see the next test")
    stack = make_stack(workers=0, RABBIT_MQ_PORT=str(free_port()))
    started = time.monotonic()
    answer = httpx.post(f"{stack.url}/generate", json={"content": "x"}, timeout=60)
    assert answer.status_code == 503
    assert "broker" in answer.json()["detail"] and "RabbitMQ" in answer.json()["detail"]
    assert time.monotonic() - started < 30  # bounded, not a hang


@pytest.mark.integration
def test_unreachable_result_store_is_503(make_stack: StackFactory) -> None:
    stack = make_stack(workers=0, REDIS_PORT=str(free_port()))
    answer = httpx.post(f"{stack.url}/generate", json={"content": "x"}, timeout=60)
    assert answer.status_code == 503
    assert "result store" in answer.json()["detail"]


@pytest.mark.integration
def test_an_unavailable_file_store_is_503_naming_no_path(
    make_stack: StackFactory, broker_env: dict[str, str], tmp_path: Path
) -> None:
    if not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("once is enough: the file store does not depend on the broker")
    blocked = tmp_path / "files-are-not-here"
    stack = make_stack(workers=0, FILE_STORE_URL=str(blocked))
    shutil.rmtree(blocked)
    blocked.write_text("a file where the store's folder was")
    line = json.dumps(chat_line("one", "hi")).encode()
    answer = httpx.post(f"{stack.url}/v1/files", files={"file": ("in.jsonl", line)}, data={"purpose": "batch"})
    assert answer.status_code == 503 and "file store unavailable" in answer.text, answer.text
    assert str(blocked) not in answer.text and "files-are-not-here" not in answer.text
