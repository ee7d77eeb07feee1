"""A stream resumed after its connection dropped, with the worker that ran its job
killed in between: the job runs again on another worker, and the client, coming back
with Last-Event-ID, gets every later piece once (the pieces the killed worker relayed
are not relayed again)."""

from __future__ import annotations

import json
import signal

import pytest

from testing.fake_model_server import FakeModelServer
from testing.load import wait_until
from testing.sse import read_events
from tests.conftest import StackFactory

pytestmark = pytest.mark.fault


def test_a_stream_resumed_after_its_worker_was_killed_is_the_whole_answer_once(
    make_stack: StackFactory, fake: FakeModelServer
) -> None:
    stack = make_stack(workers=0, JOB_LEASE="3", STREAM_LEAVE_GRACE="60")
    doomed = stack.processes.worker(stack.env, name="doomed", concurrency=4)
    fake.chunk_delay = 0.2
    fake.extra_words = 12
    body = {"model": "fake-model", "messages": [{"role": "user", "content": "a b c"}], "stream": True}
    headers = {"Idempotency-Key": "resumed-after-kill"}
    url = f"{stack.url}/v1/chat/completions"
    first = read_events(url, body, headers, stop_after=4)
    doomed.popen.send_signal(signal.SIGKILL)  # mid-answer: more than ten pieces to go
    doomed.popen.wait(5)
    assert fake.completed_streams == 0
    stack.processes.worker(stack.env, name="second", concurrency=4)
    rest = read_events(url, body, {**headers, "Last-Event-ID": str(first[-1][0])})
    whole = read_events(url, body, headers)
    assert first + rest == whole  # nothing lost, nothing twice
    text = "".join(
        choice["delta"].get("content") or ""
        for _, data in whole
        if data != "[DONE]"
        for choice in json.loads(data)["choices"]
    )
    assert text == "echo: a b c " + " ".join(f"word{i}" for i in range(12))
    wait_until(lambda: fake.completed_streams >= 1, 30, "the second run")
    assert len(fake.requests) == 2  # run again after the kill, by the second worker


def test_a_background_response_survives_its_worker_killed(make_stack: StackFactory, fake: FakeModelServer) -> None:
    import openai

    stack = make_stack(workers=0, JOB_LEASE="3")
    doomed = stack.processes.worker(stack.env, name="doomed", concurrency=4)
    fake.chunk_delay = 0.2
    fake.extra_words = 12
    sdk = openai.OpenAI(base_url=f"{stack.url}/v1", api_key="unused", max_retries=0, timeout=60,
                        _strict_response_validation=True)  # fmt: skip
    made = sdk.responses.create(model="fake-model", input="a b c", background=True)
    wait_until(lambda: sdk.responses.retrieve(made.id).status == "in_progress", 20, "the response to run")
    wait_until(lambda: fake.in_flight == 1, 20, "the model server to be asked")
    doomed.popen.send_signal(signal.SIGKILL)
    doomed.popen.wait(5)
    assert sdk.responses.retrieve(made.id).status == "in_progress"  # its lease has not lapsed yet
    stack.processes.worker(stack.env, name="second", concurrency=4)
    wait_until(lambda: sdk.responses.retrieve(made.id).status == "completed", 60, "the response, run again")
    done = sdk.responses.retrieve(made.id)
    expected = "echo: a b c " + " ".join(f"word{i}" for i in range(12))
    assert done.output_text == expected
    streamed = list(sdk.responses.retrieve(made.id, stream=True))
    assert "".join(e.delta for e in streamed if e.type == "response.output_text.delta") == expected
    assert [e.sequence_number for e in streamed] == list(range(len(streamed)))
    assert len(fake.requests) == 2


def test_a_conversations_turn_is_kept_once_when_its_worker_was_killed_mid_answer(
    make_stack: StackFactory, fake: FakeModelServer
) -> None:
    import openai

    stack = make_stack(workers=0, JOB_LEASE="3")
    doomed = stack.processes.worker(stack.env, name="doomed", concurrency=4)
    sdk = openai.OpenAI(base_url=f"{stack.url}/v1", api_key="unused", max_retries=0, timeout=60,
                        _strict_response_validation=True)  # fmt: skip
    conversation = sdk.conversations.create(items=[{"type": "message", "role": "user", "content": "first"}])
    fake.chunk_delay = 0.2
    fake.extra_words = 8
    made = sdk.responses.create(model="fake-model", input="second", conversation=conversation.id, background=True)
    wait_until(lambda: fake.in_flight == 1, 20, "the model server to be asked")
    doomed.popen.send_signal(signal.SIGKILL)
    doomed.popen.wait(5)
    stack.processes.worker(stack.env, name="second", concurrency=4)
    wait_until(lambda: sdk.responses.retrieve(made.id).status == "completed", 60, "the response, run again")
    expected = "echo: second " + " ".join(f"word{i}" for i in range(8))
    assert sdk.responses.retrieve(made.id).output_text == expected
    # The conversation holds its first item, then the turn once: its input, then its answer.
    items = sdk.conversations.items.list(conversation.id, order="asc").data
    texts = [(item.role, item.content[0].text) for item in items if item.type == "message"]
    assert texts == [("user", "first"), ("user", "second"), ("assistant", expected)]
    assert len(fake.requests) == 2  # run again after the kill, by the second worker
