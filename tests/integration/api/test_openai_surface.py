"""OpenAI's request surface beyond plain text, through the queue: every role, content
parts, tools (called, streamed in pieces, answered), structured output, logprobs, the
model server's own parameters, and raw completions of prompt lists. Each through the
official `openai` SDK with strict response validation, streamed and not."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from testing.fake_model_server import FakeModelServer
from testing.openai_sdk import client
from tests.conftest import Stack

pytestmark = pytest.mark.integration

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
CLOCK = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}


def test_a_tool_call_is_answered_with_tool_calls(stack: Stack, fake: FakeModelServer) -> None:
    answer = client(stack).chat.completions.create(
        model="fake-model",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER, CLOCK],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        parallel_tool_calls=False,
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.id == "call_0" and call.function.name == "get_time"
    assert json.loads(call.function.arguments) == {"echo": "Weather in Paris?"}
    (sent,) = fake.completions
    assert sent["tools"] == [WEATHER, CLOCK] and sent["parallel_tool_calls"] is False
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_time"}}


def test_a_streamed_tool_call_arrives_in_pieces_through_the_queue(stack: Stack, fake: FakeModelServer) -> None:
    chunks = list(
        client(stack).chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "Weather in Oslo?"}], tools=[WEATHER], stream=True
        )
    )
    pieces = [call for chunk in chunks for choice in chunk.choices for call in choice.delta.tool_calls or []]
    assert len(pieces) == 4  # the call's name, then its arguments in three pieces, as the server sent them
    assert pieces[0].id == "call_0" and pieces[0].function and pieces[0].function.name == "get_weather"
    arguments = "".join(piece.function.arguments or "" for piece in pieces if piece.function)
    assert json.loads(arguments) == {"echo": "Weather in Oslo?"}
    finishes = [choice.finish_reason for chunk in chunks for choice in chunk.choices if choice.finish_reason]
    assert finishes == ["tool_calls"]


def test_an_agent_loop_sends_tool_results_back(stack: Stack, fake: FakeModelServer) -> None:
    ask: list[dict[str, Any]] = [
        {"role": "developer", "content": "Use the tools."},
        {"role": "user", "content": [{"type": "text", "text": "Weather in Rome?"}], "name": "ada"},
    ]
    first = client(stack).chat.completions.create(model="fake-model", messages=ask, tools=[WEATHER])
    call = (first.choices[0].message.tool_calls or [])[0]
    follow_up = [
        *ask,
        first.choices[0].message.model_dump(exclude_none=True) | {"content": None},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 24 C"},
    ]
    second = client(stack).chat.completions.create(model="fake-model", messages=follow_up, tools=[WEATHER])
    assert second.choices[0].message.content == "echo: sunny, 24 C" and second.choices[0].finish_reason == "stop"
    sent = fake.completions[-1]["messages"]
    assert sent[0] == {"role": "developer", "content": "Use the tools."}
    assert sent[1] == {"role": "user", "content": [{"type": "text", "text": "Weather in Rome?"}], "name": "ada"}
    assert sent[2]["role"] == "assistant" and sent[2]["content"] is None
    assert sent[2]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert sent[3] == {"role": "tool", "tool_call_id": call.id, "content": "sunny, 24 C"}


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("tools", [{"name": "get_weather"}], "tools.0.type"),  # the function's fields without the wrapper
        ("tools", [{"type": "function", "function": {"description": "no name"}}], "tools.0.function.name"),
        ("tool_choice", "any", "tool_choice"),  # Anthropic's word, not OpenAI's
        ("tool_choice", {"type": "function", "function": {}}, "tool_choice"),
        ("response_format", {"type": "json_schema"}, "response_format"),
        ("response_format", {"type": "yaml"}, "response_format"),
        ("messages", [{"role": "user", "content": [{"type": "text", "text": 5}]}], "messages.0"),
        ("messages", [{"role": "user", "content": [{"text": "no type"}]}], "messages.0"),
    ],
)
def test_malformed_tools_formats_and_parts_are_refused_before_the_queue(
    stack: Stack, fake: FakeModelServer, field: str, value: Any, named: str
) -> None:
    body: dict[str, Any] = {"model": "fake-model", "messages": [{"role": "user", "content": "x"}], field: value}
    with pytest.raises(openai.BadRequestError) as refused:
        client(stack).chat.completions.create(**body)
    assert refused.value.status_code == 400 and named in str(refused.value.message)
    assert fake.completions == []


def test_content_parts_of_other_kinds_are_passed_on(stack: Stack, fake: FakeModelServer) -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    parts = [{"type": "text", "text": "Describe"}, image]
    answer = client(stack).chat.completions.create(model="fake-model", messages=[{"role": "user", "content": parts}])
    assert answer.choices[0].message.content == "echo: Describe"
    assert fake.completions[0]["messages"][0]["content"] == parts


def test_tool_calls_are_kept_for_whoever_collects_the_job(stack: Stack, fake: FakeModelServer) -> None:
    ask = {"model": "fake-model", "messages": [{"role": "user", "content": "Weather?"}], "tools": [WEATHER]}
    headers = {"Idempotency-Key": "tools-kept-1"}
    streamed = list(client(stack).chat.completions.create(**ask, stream=True, extra_headers=headers))
    awaited = client(stack).chat.completions.create(**ask, extra_headers=headers)
    assert len(fake.completions) == 1  # one job: streamed, then awaited
    assert [choice.finish_reason for chunk in streamed for choice in chunk.choices if choice.finish_reason] == [
        "tool_calls"
    ]
    assert (awaited.choices[0].message.tool_calls or [])[0].function.name == "get_weather"
    status = httpx.get(f"{stack.url}/jobs/tools-kept-1", timeout=10).json()
    assert status["result"]["choices"][0]["tool_calls"][0]["function"]["name"] == "get_weather"


@pytest.mark.parametrize("form", ["json_object", "json_schema"])
def test_structured_output_is_asked_for_and_returned(stack: Stack, fake: FakeModelServer, form: str) -> None:
    schema = {"type": "object", "properties": {"echo": {"type": "string"}}, "required": ["echo"]}
    response_format: dict[str, Any] = {"type": form}
    if form == "json_schema":
        response_format["json_schema"] = {"name": "echo", "schema": schema, "strict": True}
    answer = client(stack).chat.completions.create(
        model="fake-model",
        messages=[{"role": "user", "content": "hello"}],
        response_format=response_format,  # type: ignore[arg-type]
    )
    assert json.loads(answer.choices[0].message.content or "") == {"echo": "hello"}
    assert fake.completions[0]["response_format"] == response_format


def test_logprobs_come_back_whole_and_streamed(stack: Stack, fake: FakeModelServer) -> None:
    ask = {"model": "fake-model", "messages": [{"role": "user", "content": "a b"}], "logprobs": True, "top_logprobs": 1}
    answer = client(stack).chat.completions.create(**ask)  # type: ignore[call-overload]
    tokens = [entry.token for entry in (answer.choices[0].logprobs and answer.choices[0].logprobs.content) or []]
    assert "".join(tokens) == "echo: a b"
    chunks = list(client(stack).chat.completions.create(**ask, stream=True))  # type: ignore[call-overload]
    streamed = [e.token for c in chunks for ch in c.choices if ch.logprobs for e in ch.logprobs.content or []]
    assert "".join(streamed) == "echo: a b"
    assert fake.completions[0]["top_logprobs"] == 1


def test_the_model_servers_own_parameters_pass_through(stack: Stack, fake: FakeModelServer) -> None:
    extra = {"top_k": 5, "min_p": 0.1, "repetition_penalty": 1.1, "chat_template_kwargs": {"enable_thinking": False}}
    client(stack).chat.completions.create(
        model="fake-model",
        messages=[{"role": "user", "content": "x"}],
        extra_body=extra,
        user="u-1",
        metadata={"team": "eval"},
        logit_bias={"50256": -100},
        max_completion_tokens=20,
    )
    (sent,) = fake.completions
    assert {key: sent[key] for key in extra} == extra
    assert (sent["user"], sent["metadata"], sent["logit_bias"], sent["max_tokens"]) == (
        "u-1",
        {"team": "eval"},
        {"50256": -100},
        20,
    )
    assert sent["stream"] is True and "priority" not in sent  # the gateway's own, not passed on
    too_many = {f"x{i}": i for i in range(65)}
    with pytest.raises(openai.BadRequestError, match="at most 64 fields"):
        client(stack).chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "x"}], extra_body=too_many
        )


def test_a_raw_completion_of_a_prompt_list(stack: Stack, fake: FakeModelServer) -> None:
    answer = client(stack).completions.create(
        model="fake-model", prompt=["one", "two"], n=2, echo=True, logprobs=1, suffix="end", max_tokens=50
    )
    texts = {choice.index: choice.text for choice in answer.choices}
    assert texts == {0: "one echo: one", 1: "one echo: one", 2: "two echo: two", 3: "two echo: two"}
    assert answer.choices[0].logprobs and answer.choices[0].logprobs.tokens == ["one", " echo:", " one"]
    (sent,) = fake.raw_completions
    assert (sent["prompt"], sent["echo"], sent["suffix"], sent["logprobs"], sent["n"]) == (
        ["one", "two"],
        True,
        "end",
        1,
        2,
    )
    # Not strict here: the SDK types a completion chunk's finish_reason as never null,
    # yet OpenAI's own streams (and vLLM's, and ours) send null in every chunk but the
    # last; strict validation would refuse OpenAI's API itself.
    lenient = openai.OpenAI(base_url=f"{stack.url}/v1", api_key="not-needed", max_retries=0, timeout=30)
    chunks = list(lenient.completions.create(model="fake-model", prompt=["three", "four"], stream=True))
    joined: dict[int, str] = {}
    finishes: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            joined[choice.index] = joined.get(choice.index, "") + choice.text
            if choice.finish_reason is not None:
                finishes[choice.index] = choice.finish_reason
    assert joined == {0: "echo: three", 1: "echo: four"}
    assert finishes == {0: "stop", 1: "stop"}


def test_openai_streams_end_with_done_on_the_wire(stack: Stack, fake: FakeModelServer) -> None:
    body = {"model": "fake-model", "messages": [{"role": "user", "content": "x"}], "tools": [WEATHER], "stream": True}
    with httpx.stream("POST", f"{stack.url}/v1/chat/completions", json=body, timeout=30) as events:
        lines = [line for line in events.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    # Each event an id line, then its data.
    assert all(line.startswith("data: ") for line in lines[1::2])
    assert lines[::2] == [f"id: {n}" for n in range(len(lines) // 2)]
