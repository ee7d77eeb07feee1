"""OpenAI's Responses API through the queue, as the official SDK (strict validation)
speaks it: plain, streamed, background; retrieve, cancel, delete, input items;
previous_response_id; function tools; text.format; a stream resumed."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from testing.fake_model_server import FakeModelServer
from testing.load import wait_until
from testing.openai_sdk import client
from tests.conftest import Stack, StackFactory

pytestmark = pytest.mark.integration

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def test_a_response_plain_and_read_back(stack_once: Stack, fake: FakeModelServer) -> None:
    sdk = client(stack_once)
    made = sdk.responses.create(model="fake-model", input="one two", instructions="Be brief.", metadata={"k": "v"})
    assert made.status == "completed" and made.output_text == "echo: one two"
    assert made.id.startswith("resp_") and made.object == "response" and made.metadata == {"k": "v"}
    assert made.usage is not None and made.usage.output_tokens == 3 and made.usage.total_tokens > 3
    assert fake.completions[-1]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "one two"},
    ]
    again = sdk.responses.retrieve(made.id)
    assert again.model_dump(exclude={"completed_at"}) == made.model_dump(exclude={"completed_at"})
    items = sdk.responses.input_items.list(made.id)
    assert [(i.type, i.role, i.content[0].text) for i in items.data] == [("message", "user", "one two")]


def test_a_streamed_response_is_typed_events_in_order(stack: Stack, fake: FakeModelServer) -> None:
    sdk = client(stack)
    events = list(sdk.responses.create(model="fake-model", input="a b c", stream=True))
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]  # fmt: skip
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]  # fmt: skip
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == "echo: a b c" and len(deltas) == 4
    done = events[-1].response
    assert done.status == "completed" and done.output_text == "echo: a b c"
    # The response read back is the one the stream ended with.
    assert sdk.responses.retrieve(done.id).output == done.output


def test_a_background_response_queued_running_done(make_stack: StackFactory, fake: FakeModelServer) -> None:
    stack = make_stack(workers=0)
    sdk = client(stack)
    made = sdk.responses.create(model="fake-model", input="later", background=True)
    assert made.status == "queued" and made.background is True
    assert sdk.responses.retrieve(made.id).status == "queued"  # no worker yet
    fake.latency = 1.5
    stack.processes.worker(stack.env)
    wait_until(lambda: sdk.responses.retrieve(made.id).status == "in_progress", 20, "the response to run")
    wait_until(lambda: sdk.responses.retrieve(made.id).status == "completed", 20, "the response")
    assert sdk.responses.retrieve(made.id).output_text == "echo: later"


def test_a_background_response_cancelled_then_deleted(stack: Stack, fake: FakeModelServer) -> None:
    sdk = client(stack)
    fake.latency = 20
    made = sdk.responses.create(model="fake-model", input="long", background=True)
    wait_until(lambda: fake.in_flight == 1, 20, "the model server to be asked")
    cancelled = sdk.responses.cancel(made.id)
    assert cancelled.status == "cancelled"
    wait_until(lambda: fake.in_flight == 0, 20, "the model server's call to be closed")
    assert sdk.responses.retrieve(made.id).status == "cancelled"
    with pytest.raises(openai.BadRequestError, match="cancelled"):  # no conversation to go on with
        sdk.responses.create(model="fake-model", input="x", previous_response_id=made.id)
    sdk.responses.delete(made.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(made.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.delete(made.id)


def test_previous_response_id_carries_the_conversation_over_three_turns(
    stack_once: Stack, fake: FakeModelServer
) -> None:
    sdk = client(stack_once)
    first = sdk.responses.create(model="fake-model", input="one", instructions="first rules")
    second = sdk.responses.create(model="fake-model", input="two", previous_response_id=first.id)
    third = sdk.responses.create(model="fake-model", input="three", previous_response_id=second.id,
                                 instructions="third rules")  # fmt: skip
    assert third.output_text == "echo: three" and third.previous_response_id == second.id
    # Instructions are not carried over; every turn's messages and answers are.
    assert fake.completions[-1]["messages"] == [
        {"role": "system", "content": "third rules"},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "echo: one"},
        {"role": "user", "content": "two"},
        {"role": "assistant", "content": "echo: two"},
        {"role": "user", "content": "three"},
    ]
    # A turn's input items are its own.
    assert [i.content[0].text for i in sdk.responses.input_items.list(third.id, order="asc").data] == ["three"]


def test_function_tools_round_trip(stack_once: Stack, fake: FakeModelServer) -> None:
    sdk = client(stack_once)
    asked = sdk.responses.create(model="fake-model", input="Paris", tools=[WEATHER])
    calls = [item for item in asked.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather" and json.loads(calls[0].arguments) == {"echo": "Paris"}
    sent = fake.completions[-1]
    assert sent["tools"] == [{"type": "function", "function": {k: v for k, v in WEATHER.items() if k != "type"}}]
    answered = sdk.responses.create(
        model="fake-model",
        previous_response_id=asked.id,
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"}],
        tools=[WEATHER],
    )
    assert answered.output_text == "echo: sunny"
    messages = fake.completions[-1]["messages"]
    assert messages[-2]["role"] == "assistant" and messages[-2]["tool_calls"][0]["id"] == calls[0].call_id
    assert messages[-1] == {"role": "tool", "tool_call_id": calls[0].call_id, "content": "sunny"}


def test_a_streamed_function_call(stack_once: Stack, fake: FakeModelServer) -> None:
    events = list(client(stack_once).responses.create(model="fake-model", input="Oslo", tools=[WEATHER], stream=True))
    arguments = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert json.loads(arguments) == {"echo": "Oslo"}
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert done.arguments == arguments
    final = events[-1].response
    assert final.output[-1].type == "function_call" and final.output[-1].arguments == arguments


def test_text_format_json_schema(stack_once: Stack, fake: FakeModelServer) -> None:
    schema = {"type": "object", "properties": {"echo": {"type": "string"}}, "required": ["echo"]}
    made = client(stack_once).responses.create(
        model="fake-model", input="hi", text={"format": {"type": "json_schema", "name": "e", "schema": schema}}
    )
    assert json.loads(made.output_text) == {"echo": "hi"}
    asked = {"type": "json_schema", "json_schema": {"name": "e", "schema": schema}}
    assert fake.completions[-1]["response_format"] == asked


def test_a_background_stream_resumes_after_a_disconnect(make_stack: StackFactory, fake: FakeModelServer) -> None:
    stack = make_stack(STREAM_LEAVE_GRACE="30")
    sdk = client(stack)
    fake.chunk_delay = 0.1
    fake.extra_words = 10
    made = sdk.responses.create(model="fake-model", input="go", background=True)
    first = []
    with sdk.responses.retrieve(made.id, stream=True) as stream:
        for event in stream:
            first.append(event)
            if len(first) == 6:
                break  # the connection dropped
    rest = list(sdk.responses.retrieve(made.id, stream=True, starting_after=first[-1].sequence_number))
    whole = list(sdk.responses.retrieve(made.id, stream=True))
    assert [e.model_dump() for e in first + rest] == [e.model_dump() for e in whole]
    assert whole[-1].type == "response.completed"
    text = "".join(e.delta for e in whole if e.type == "response.output_text.delta")
    assert text == "echo: go " + " ".join(f"word{i}" for i in range(10)) == whole[-1].response.output_text
    assert len(fake.requests) == 1


def test_a_background_response_runs_on_when_a_reader_of_its_stream_leaves(
    stack_once: Stack, fake: FakeModelServer
) -> None:
    # The stack's STREAM_LEAVE_GRACE is 1 s: a foreground stream's own request that left
    # would have its job cancelled by then. A background response's reader is not its
    # request: it leaves, and the response runs to its end.
    sdk = client(stack_once)
    fake.chunk_delay = 0.2
    fake.extra_words = 12
    made = sdk.responses.create(model="fake-model", input="go on", background=True)
    with sdk.responses.retrieve(made.id, stream=True) as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                break  # the reader leaves mid-answer
    wait_until(lambda: sdk.responses.retrieve(made.id).status != "in_progress", 30, "the response to end")
    done = sdk.responses.retrieve(made.id)
    assert done.status == "completed"
    assert done.output_text == "echo: go on " + " ".join(f"word{i}" for i in range(12))
    assert len(fake.requests) == 1


def test_a_background_response_streamed_from_its_creation_resumes_after_a_disconnect(
    make_stack: StackFactory, fake: FakeModelServer
) -> None:
    # OpenAI's pattern: create a background response and stream it at once; read on
    # with starting_after when the connection drops. With no grace, a foreground
    # stream's own request leaving would have its job cancelled at once.
    stack = make_stack(STREAM_LEAVE_GRACE="0")
    sdk = client(stack)
    fake.chunk_delay = 0.1
    fake.extra_words = 10
    first = []
    with sdk.responses.create(model="fake-model", input="go", background=True, stream=True) as stream:
        for event in stream:
            first.append(event)
            if len(first) == 6:
                break  # the connection dropped
    created = first[0]
    assert created.type == "response.created" and created.response.status == "queued" and created.response.background
    response_id = created.response.id
    rest = list(sdk.responses.retrieve(response_id, stream=True, starting_after=first[-1].sequence_number))
    whole = list(sdk.responses.retrieve(response_id, stream=True))
    # No event lost, none twice: the two halves are the whole stream, numbered from 0.
    assert [e.model_dump() for e in first + rest] == [e.model_dump() for e in whole]
    assert [e.sequence_number for e in whole] == list(range(len(whole)))
    assert whole[-1].type == "response.completed"
    words = "echo: go " + " ".join(f"word{i}" for i in range(10))
    assert "".join(e.delta for e in whole if e.type == "response.output_text.delta") == words
    done = sdk.responses.retrieve(response_id)
    assert done.status == "completed" and done.output_text == words and done.background is True
    assert len(fake.completions) == 1


def test_a_background_response_runs_on_when_its_own_streams_reader_leaves(
    stack_once: Stack, fake: FakeModelServer
) -> None:
    # The stack's STREAM_LEAVE_GRACE is 1 s; the answer takes about 3 s.
    sdk = client(stack_once)
    fake.chunk_delay = 0.2
    fake.extra_words = 12
    with sdk.responses.create(model="fake-model", input="go on", background=True, stream=True) as stream:
        for event in stream:
            if event.type == "response.created":
                response_id = event.response.id
            if event.type == "response.output_text.delta":
                break  # the reader leaves mid-answer
    wait_until(lambda: sdk.responses.retrieve(response_id).status != "in_progress", 30, "the response to end")
    done = sdk.responses.retrieve(response_id)
    assert done.status == "completed"
    assert done.output_text == "echo: go on " + " ".join(f"word{i}" for i in range(12))
    assert len(fake.completions) == 1 and fake.disconnects == 0


def test_a_background_response_whose_streams_reader_left_is_cancelled_by_cancel(
    stack_once: Stack, fake: FakeModelServer
) -> None:
    sdk = client(stack_once)
    fake.stall_after, fake.stall = 2, 60  # the model server pauses mid-answer
    with sdk.responses.create(model="fake-model", input="long", background=True, stream=True) as stream:
        for event in stream:
            if event.type == "response.created":
                response_id = event.response.id
            if event.type == "response.output_text.delta":
                break
    wait_until(lambda: fake.stalling == 1, 20, "the model server to pause")
    assert sdk.responses.retrieve(response_id).status == "in_progress"
    assert sdk.responses.cancel(response_id).status == "cancelled"
    wait_until(lambda: fake.disconnects_while_stalled == 1, 20, "the model server's call to be closed")
    assert sdk.responses.retrieve(response_id).status == "cancelled"


def test_a_streamed_response_not_in_the_background_is_cancelled_when_its_reader_leaves(
    stack_once: Stack, fake: FakeModelServer
) -> None:
    # The contrast: the stream's own request, not a background one, leaves and does not
    # come back within STREAM_LEAVE_GRACE (1 s): its response is cancelled.
    sdk = client(stack_once)
    fake.stall_after, fake.stall = 2, 60
    with sdk.responses.create(model="fake-model", input="long", stream=True) as stream:
        for event in stream:
            if event.type == "response.created":
                response_id = event.response.id
            if event.type == "response.output_text.delta":
                break
    wait_until(lambda: fake.disconnects_while_stalled == 1, 20, "the model server's call to be closed")
    assert sdk.responses.retrieve(response_id).status == "cancelled"


def test_usage_is_null_when_the_model_server_counts_nothing(stack_once: Stack, fake: FakeModelServer) -> None:
    sdk = client(stack_once)
    fake.sends_usage = False
    made = sdk.responses.create(model="fake-model", input="x")
    assert made.output_text == "echo: x" and made.usage is None
    assert sdk.responses.retrieve(made.id).usage is None
    streamed = list(sdk.responses.create(model="fake-model", input="y", stream=True))
    assert streamed[-1].response.output_text == "echo: y" and streamed[-1].response.usage is None
    fake.sends_usage = True
    counted = sdk.responses.create(model="fake-model", input="z")
    assert counted.usage is not None and counted.usage.input_tokens == 5 and counted.usage.output_tokens == 2


def test_sampling_left_unset_is_not_sent_so_the_servers_defaults_apply(
    stack_once: Stack, fake: FakeModelServer
) -> None:
    sdk = client(stack_once)
    unset = sdk.responses.create(model="fake-model", input="x")
    sent = fake.completions[-1]
    assert not {"temperature", "top_p", "max_tokens", "tool_choice", "parallel_tool_calls", "user"} & sent.keys()
    assert unset.temperature == 1.0 and unset.top_p == 1.0  # shown as OpenAI's defaults, though none was sent
    given = sdk.responses.create(model="fake-model", input="x", temperature=0.4, top_p=0.5, max_output_tokens=9)
    sent = fake.completions[-1]
    assert (sent["temperature"], sent["top_p"], sent["max_tokens"]) == (0.4, 0.5, 9)
    assert (given.temperature, given.top_p, given.max_output_tokens) == (0.4, 0.5, 9)


def test_store_false_keeps_nothing_once_read(stack: Stack, fake: FakeModelServer) -> None:
    sdk = client(stack)
    made = sdk.responses.create(model="fake-model", input="secret", store=False)
    assert made.output_text == "echo: secret"
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(made.id)
    streamed = list(sdk.responses.create(model="fake-model", input="secret", store=False, stream=True))
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(streamed[-1].response.id)
    with pytest.raises(openai.BadRequestError, match="background"):
        sdk.responses.create(model="fake-model", input="x", store=False, background=True)


def test_bad_input_is_a_4xx_naming_the_field(stack_once: Stack, fake: FakeModelServer) -> None:
    url = f"{stack_once.url}/v1/responses"
    for body, field in [
        ({"input": [{"type": "message", "role": "robot", "content": "x"}]}, "role"),
        ({"input": [{"type": "web_search_call"}]}, "input"),
        ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}, "content"),
        ({"input": "x", "tools": [{"type": "web_search"}]}, "tools"),
        ({"input": "x", "text": {"format": {"type": "xml"}}}, "format"),
        ({"input": "x", "previous_response_id": "resp_nothing"}, "previous_response_id"),
        ({"input": "x", "temperature": float("inf")}, "temperature"),
        ({"input": "\udfff"}, "input"),
        ({"input": [[[[]]]]}, "input"),
        ({}, "input"),
    ]:
        answer = httpx.post(url, content=json.dumps(body), headers={"content-type": "application/json"}, timeout=10)
        assert 400 <= answer.status_code < 500, (body, answer.text)
        assert field in answer.text, (body, answer.text)
    assert httpx.get(f"{url}/resp_unknown", timeout=10).status_code == 404
    assert fake.requests == []  # nothing was queued


def test_a_batch_of_responses(stack: Stack, fake: FakeModelServer) -> None:
    from testing.openai_sdk import file_lines, upload, wait_until_finished

    sdk = client(stack)
    lines = [
        {"custom_id": "r0", "method": "POST", "url": "/v1/responses",
         "body": {"model": "fake-model", "input": "first", "instructions": "Be brief."}},
        {"custom_id": "r1", "method": "POST", "url": "/v1/responses",
         "body": {"model": "fake-model", "input": [{"role": "user", "content": "second"}], "tools": [WEATHER]}},
    ]  # fmt: skip
    batch = sdk.batches.create(input_file_id=upload(sdk, lines), endpoint="/v1/responses", completion_window="24h")
    batch = wait_until_finished(sdk, batch.id)
    assert batch.status == "completed" and batch.request_counts.completed == 2
    output = {line["custom_id"]: line for line in file_lines(sdk, batch.output_file_id)}
    first = openai.types.responses.Response.model_validate(output["r0"]["response"]["body"])
    second = openai.types.responses.Response.model_validate(output["r1"]["response"]["body"])
    assert first.output_text == "echo: first" and first.instructions == "Be brief."
    assert second.output[0].type == "function_call" and second.tools[0].name == "get_weather"
    # A line that cannot be a batch's: refused with the file, naming it.
    bad = [{"custom_id": "b", "method": "POST", "url": "/v1/responses",
            "body": {"model": "fake-model", "input": "x", "background": True}}]  # fmt: skip
    with pytest.raises(openai.BadRequestError, match="background"):
        sdk.batches.create(input_file_id=upload(sdk, bad), endpoint="/v1/responses", completion_window="24h")
