"""What a job leaves in Redis, and for how long: its answer and what its claim held that
a client still reads, in one key, for RESULT_TTL; a delivered stream's events for
STREAM_TTL (a resume is all they serve); nothing of its run. Each test checks what a
client still gets, then the keys and their TTLs in the real Redis."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest
import redis

from shared.contract.embeddings import unpack_vector
from testing.fake_model_server import FakeModelServer
from testing.sse import read_events
from tests.conftest import Stack, StackFactory

pytestmark = pytest.mark.integration

CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "one two three four"}], "stream": True}
STREAM_TTL = 120  # seconds, far below RESULT_TTL's day


def _redis(stack: Stack) -> redis.Redis:
    config = stack.config
    return redis.Redis(host=config.redis_host, port=config.redis_port)


def test_a_delivered_stream_is_kept_stream_ttl_for_resumes_and_its_answer_result_ttl(
    make_stack: StackFactory, fake: FakeModelServer
) -> None:
    stack = make_stack(STREAM_TTL=str(STREAM_TTL))
    key = f"kept-{uuid.uuid4().hex[:8]}"
    url, headers = f"{stack.url}/v1/chat/completions", {"Idempotency-Key": key}
    whole = read_events(url, CHAT, headers)
    # Resumed inside the window: the events after the last one had, each once.
    assert read_events(url, CHAT, {**headers, "Last-Event-ID": "2"}) == whole[3:]
    store, keys = _redis(stack), stack.config.keys
    assert 0 < store.ttl(keys.stream(key)) <= STREAM_TTL
    assert store.ttl(keys.result(key)) > STREAM_TTL * 100  # RESULT_TTL: a day
    assert len(fake.requests) == 1


def test_a_resume_after_the_stream_is_gone_is_told_where_the_answer_is(
    make_stack: StackFactory, fake: FakeModelServer
) -> None:
    stack = make_stack(STREAM_TTL=str(STREAM_TTL))
    job_id = f"gone-{uuid.uuid4().hex[:8]}"
    url, body = f"{stack.url}/generate", {"content": "a b c d", "stream": True, "job_id": job_id}
    whole = read_events(url, body, {})
    store, keys = _redis(stack), stack.config.keys
    assert store.delete(keys.stream(job_id)) == 1  # as STREAM_TTL after its end
    # A resume gets one clear last event, at once: no hang, no pieces at the wrong places.
    with httpx.stream("POST", url, json=body, headers={"Last-Event-ID": "1"}, timeout=30) as answer:
        lines = [line for line in answer.iter_lines() if line and not line.startswith("id: ")]
    assert lines[-2] == "event: error"
    error = json.loads(lines[-1].removeprefix("data: "))
    assert error["status"] == 404 and f"/jobs/{job_id}" in error["detail"]
    # The answer is still whole: the same request without Last-Event-ID, and its status.
    again = read_events(url, body, {})  # in one piece now, then the same last event
    assert again[-1][1] == whole[-1][1] and json.loads(again[0][1])["content"] == "echo: a b c d"
    status = httpx.get(f"{stack.url}/jobs/{job_id}", timeout=10).json()
    assert status["status"] == "succeeded" and status["result"]["content"] == "echo: a b c d"
    assert status["result"]["finish_reason"] == "stop"
    assert len(fake.requests) == 1


def _left_by(store: redis.Redis, stack: Stack, job_id: str) -> dict[str, int]:
    """Every key under the stack's prefix naming `job_id`, with its TTL."""
    found = store.scan_iter(match=f"{stack.config.key_prefix}*{job_id}*")
    return {name.decode().removeprefix(stack.config.key_prefix): store.ttl(name) for name in found}


def test_an_ended_job_leaves_one_key_its_answer_and_claim_and_none_of_its_run(
    stack: Stack, fake: FakeModelServer
) -> None:
    job_id = f"lean-{uuid.uuid4().hex[:8]}"
    body = {"job_id": job_id, "content": "hello there", "meta": {"tokens_limit": 16}}
    answer = httpx.post(f"{stack.url}/generate", json=body, timeout=30)
    assert answer.json() == {"content": "echo: hello there", "job_id": job_id}
    assert "queue;dur=" in answer.headers["server-timing"]  # its run's times reached its request
    store, keys = _redis(stack), stack.config.keys
    # One key, kept RESULT_TTL: no claim's hash, no lease, no stream, no readers' count.
    left = _left_by(store, stack, job_id)
    assert list(left) == [f"celery-task-meta-{job_id}"]
    assert stack.config.result_ttl - 60 < left[f"celery-task-meta-{job_id}"] <= stack.config.result_ttl
    stored = json.loads(store.get(keys.result(job_id)))
    # Not the request again (Celery's args), the answer's text once, in its choice, and
    # not its run's times; the claim's fingerprint and times (its key names its tenant).
    assert "args" not in stored and "kwargs" not in stored and "content" not in stored["result"]
    assert "timing" not in stored["result"]
    assert stored["result"]["choices"][0]["content"] == "echo: hello there"
    assert set(stored["claim"]) == {"fingerprint", "accepted_at", "started_at"}
    # What a client reads back is as it was: the same job_id again, and its status.
    assert httpx.post(f"{stack.url}/generate", json=body, timeout=30).json() == answer.json()
    status = httpx.get(f"{stack.url}/jobs/{job_id}", timeout=10).json()
    assert status["result"]["content"] == "echo: hello there" and status["result"]["finish_reason"] == "stop"
    assert status["tenant"] == "default" and status["accepted_at"] <= status["started_at"] <= status["finished_at"]
    changed = httpx.post(f"{stack.url}/generate", json={**body, "content": "other"}, timeout=30)
    assert changed.status_code == 409  # another body under the same job_id: still refused
    assert len(fake.requests) == 1
    assert list(_left_by(store, stack, job_id)) == [f"celery-task-meta-{job_id}"]  # nothing made again


def test_an_ended_embedding_job_leaves_one_key_its_vectors_packed(stack: Stack, fake: FakeModelServer) -> None:
    key = f"vec-{uuid.uuid4().hex[:8]}"
    url, body = f"{stack.url}/v1/embeddings", {"model": "fake-model", "input": ["one", "two"]}
    answer = httpx.post(url, json=body, headers={"Idempotency-Key": key}, timeout=30).json()
    store = _redis(stack)
    assert list(_left_by(store, stack, key)) == [f"celery-task-meta-{key}"]
    stored = json.loads(store.get(stack.config.keys.result(key)))
    # Each vector as the contract packs it (base64 of float32), not as JSON's floats.
    assert [unpack_vector(packed) for packed in stored["result"]["embeddings"]] == [
        item["embedding"] for item in answer["data"]
    ]
    assert "timing" not in stored["result"] and set(stored["claim"]) == {"fingerprint", "accepted_at", "started_at"}
    assert httpx.post(url, json=body, headers={"Idempotency-Key": key}, timeout=30).json() == answer
    assert httpx.get(f"{stack.url}/jobs/{key}", timeout=10).json()["status"] == "succeeded"
    assert len(fake.requests) == 1


def test_a_background_response_is_read_whole_after_its_stream_is_gone(
    make_stack: StackFactory, fake: FakeModelServer
) -> None:
    stack = make_stack(STREAM_TTL=str(STREAM_TTL))
    api = httpx.Client(base_url=f"{stack.url}/v1", timeout=30)
    made = api.post("/responses", json={"model": "fake-model", "input": "go on", "background": True}).json()
    for _ in range(200):
        got = api.get(f"/responses/{made['id']}").json()
        if got["status"] == "completed":
            break
        time.sleep(0.05)
    assert got["status"] == "completed"
    store, keys = _redis(stack), stack.config.keys
    stream = keys.stream(made["id"])
    assert 0 < store.ttl(stream) <= STREAM_TTL
    store.delete(stream)
    assert "echo: go on" in json.dumps(api.get(f"/responses/{made['id']}").json()["output"])
    with api.stream("GET", f"/responses/{made['id']}", params={"stream": "true"}) as events:
        text = events.read().decode()
    assert "response.completed" in text and "echo: go on" in text
