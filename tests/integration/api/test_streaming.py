"""Answers streamed through the queue: the worker relays pieces through Redis as the model server sends them."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import openai
import pytest

from testing.fake_model_server import Failure, FakeModelServer
from testing.sse import read_events
from tests.conftest import Stack, StackFactory

pytestmark = pytest.mark.integration

ASK = {"model": "fake-model", "messages": [{"role": "user", "content": "one two three four"}]}


def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.url}/v1", api_key="not-needed", max_retries=0, timeout=30)


def test_chunks_arrive_while_the_model_server_is_still_generating(stack: Stack, fake: FakeModelServer) -> None:
    fake.chunk_delay = 0.2
    pieces, streams_done_at_first = [], None
    stream = client(stack).chat.completions.create(**ASK, stream=True, stream_options={"include_usage": True})
    usage = None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                if streams_done_at_first is None:
                    streams_done_at_first = fake.completed_streams
                pieces.append(choice.delta.content)
    assert "".join(pieces) == "echo: one two three four"
    assert len(pieces) == 5  # one per word, as the model server sent them
    assert streams_done_at_first == 0  # the first piece came before the model server finished
    assert usage is not None and usage.completion_tokens == 5
    assert len(fake.completions) == 1 and fake.completions[0]["stream"] is True


def test_completions_stream_too(stack: Stack, fake: FakeModelServer) -> None:
    stream = client(stack).completions.create(model="fake-model", prompt="a b c", stream=True)
    assert "".join(chunk.choices[0].text for chunk in stream if chunk.choices) == "echo: a b c"


def test_spec_endpoint_streams_with_accept_header(stack: Stack, fake: FakeModelServer) -> None:
    body = {"job_id": "spec-stream-1", "content": "x y"}
    with httpx.stream(
        "POST", f"{stack.url}/generate", json=body, headers={"Accept": "text/event-stream"}, timeout=30
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        text = "".join(response.iter_text())
    # Each event with its id, its place in the stream (a returning client's Last-Event-ID).
    events = [block.split("\n", 1) for block in text.strip().split("\n\n") if block]
    assert [head for head, _ in events] == [f"id: {n}" for n in range(len(events))]
    events = [event for _, event in events]
    pieces = [json.loads(e.removeprefix("data: "))["content"] for e in events if e.startswith("data: ")]
    assert pieces == ["echo:", " x", " y"]
    assert events[-1].startswith("event: done\n")
    done = json.loads(events[-1].split("data: ", 1)[1])
    assert done == {"job_id": "spec-stream-1", "content": "echo: x y", "finish_reason": "stop"}
    # The same job asked for again, unstreamed: its stored answer, no second model call.
    again = httpx.post(f"{stack.url}/generate", json=body, timeout=30)
    assert again.json()["content"] == "echo: x y" and len(fake.completions) == 1


def test_a_client_that_leaves_mid_stream_cancels_the_job(stack: Stack, fake: FakeModelServer) -> None:
    fake.chunk_delay = 0.05
    fake.extra_words = 400  # a 20 s answer
    headers = {"Idempotency-Key": "leaver-1"}
    stream = client(stack).chat.completions.create(**ASK, stream=True, extra_headers=headers)
    received = 0
    for chunk in stream:
        received += sum(1 for c in chunk.choices if c.delta.content)
        if received >= 3:
            break
    stream.close()
    deadline = time.monotonic() + 10
    while not fake.disconnects and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake.disconnects == 1 and fake.completed_streams == 0
    status = httpx.get(f"{stack.url}/jobs/leaver-1").json()
    assert status["status"] == "cancelled"


def test_a_job_that_fails_ends_its_stream_with_an_error(stack: Stack, fake: FakeModelServer) -> None:
    fake.strict_models = True
    with pytest.raises(openai.APIError, match="does not exist"):
        for _ in client(stack).chat.completions.create(**{**ASK, "model": "gpt-model"}, stream=True):
            pass


def _events(stack: Stack, path: str, body: dict) -> list[str]:
    with httpx.stream("POST", f"{stack.url}{path}", json=body, timeout=30) as answer:
        assert answer.status_code == 200
        return [line for line in answer.iter_lines() if line and not line.startswith("id: ")]


def test_streams_end_on_the_wire_as_their_clients_expect(stack: Stack, fake: FakeModelServer) -> None:
    # Read raw, not through a client that forgives a stream that just stops.
    lines = _events(stack, "/v1/chat/completions", {**ASK, "stream": True})
    assert lines[-1] == "data: [DONE]" and lines.count("data: [DONE]") == 1
    lines = _events(stack, "/v1/completions", {"model": "fake-model", "prompt": "x", "stream": True})
    assert lines[-1] == "data: [DONE]"
    lines = _events(stack, "/generate", {"content": "x", "stream": True})
    assert lines[-2] == "event: done" and json.loads(lines[-1].removeprefix("data: "))["finish_reason"] == "stop"


def test_a_failed_stream_ends_with_an_error_event_on_the_wire(stack: Stack, fake: FakeModelServer) -> None:
    fake.failures = [Failure(500, {"error": {"message": "CUDA out of memory"}})] * 6
    lines = _events(stack, "/v1/chat/completions", {**ASK, "stream": True})
    error = json.loads(lines[-1].removeprefix("data: "))["error"]
    assert error["code"] == 502 and "CUDA out of memory" in error["message"] and error["type"]
    assert "data: [DONE]" not in lines  # an error ends it, as OpenAI's streams end
    lines = _events(stack, "/generate", {"content": "x", "stream": True})
    assert lines[-2] == "event: error"
    assert json.loads(lines[-1].removeprefix("data: "))["status"] == 502


STREAMING_ENDPOINTS = [
    ("/v1/chat/completions", {**ASK, "stream": True}, "Idempotency-Key"),
    ("/v1/completions", {"model": "fake-model", "prompt": "a b c d", "stream": True}, "Idempotency-Key"),
    ("/generate", {"content": "a b c d", "stream": True}, None),
    ("/chat_completion", {"messages": [{"role": "user", "content": "a b c d"}], "stream": True}, None),
]


@pytest.mark.parametrize(("path", "body", "header"), STREAMING_ENDPOINTS)
def test_a_stream_resumed_at_or_past_its_end_ends_with_its_last_event_on_every_streaming_endpoint(
    stack_once: Stack, fake: FakeModelServer, path: str, body: dict, header: str | None
) -> None:
    job_id = f"past-{uuid.uuid4().hex[:8]}"
    body = dict(body) if header else {**body, "job_id": job_id}
    headers = {header: job_id} if header else {}
    url = f"{stack_once.url}{path}"
    whole = read_events(url, body, headers)
    # A client that had every event, or names one past the end, is told the stream
    # ended ([DONE], event: done), as it would be told at the end of any stream.
    for seen in (whole[-1][0], whole[-1][0] + 1000):
        assert read_events(url, body, {**headers, "Last-Event-ID": str(seen)}) == [whole[-1]]
    assert len(fake.requests) == 1


def test_a_response_stream_resumed_past_its_end_ends_with_its_last_event(
    stack_once: Stack, fake: FakeModelServer
) -> None:
    sdk = client(stack_once)
    made = sdk.responses.create(model="fake-model", input="go", background=True)
    whole = list(sdk.responses.retrieve(made.id, stream=True))
    after = list(sdk.responses.retrieve(made.id, stream=True, starting_after=whole[-1].sequence_number + 50))
    assert [e.type for e in after] == ["response.completed"]
    assert after[0].model_dump() == whole[-1].model_dump()


@pytest.mark.parametrize(("path", "body", "header"), STREAMING_ENDPOINTS)
def test_a_dropped_stream_resumes_where_it_stopped_on_every_streaming_endpoint(
    make_stack: StackFactory, fake: FakeModelServer, path: str, body: dict, header: str | None
) -> None:
    stack = make_stack(STREAM_LEAVE_GRACE="30")
    fake.chunk_delay = 0.1
    job_id = f"resume-{uuid.uuid4().hex[:8]}"
    body = dict(body) if header else {**body, "job_id": job_id}
    headers = {header: job_id} if header else {}
    url = f"{stack.url}{path}"
    first = read_events(url, body, headers, stop_after=3)
    assert [place for place, _ in first] == [0, 1, 2]
    # Back while the job still runs (it was not cancelled on leaving): the events after
    # the last one had, each once.
    rest = read_events(url, body, {**headers, "Last-Event-ID": "2"})
    whole = read_events(url, body, headers)  # once more from the start, after the end
    assert first + rest == whole
    assert [place for place, _ in whole] == list(range(len(whole)))
    assert len(fake.requests) == 1  # one job, read three times
    assert httpx.get(f"{stack.url}/jobs/{job_id}", timeout=10).json()["status"] == "succeeded"
