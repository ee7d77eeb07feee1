"""Bodies LangChain's ChatAnthropic and Claude Code send to /v1/messages, recorded in
tests/fixtures/anthropic_clients/ by the script there (each run once in a throwaway
place: langchain-anthropic pins its own anthropic, Claude Code is an npm package),
sent through the real pipeline as recorded, with the headers they sent; each answer
is validated against the official ``anthropic`` SDK's types, every stream event
included."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from anthropic.types import Message, MessageTokensCount, RawMessageStreamEvent
from pydantic import TypeAdapter

from testing.fake_model_server import FakeModelServer
from testing.processes import ROOT
from tests.conftest import Stack

pytestmark = pytest.mark.integration

FIXTURES = ROOT / "tests" / "fixtures" / "anthropic_clients"
RECORDED = {path.stem: json.loads(path.read_text()) for path in sorted(FIXTURES.glob("*.json"))}
EVENTS: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)


def send(stack: Stack, name: str) -> Any:
    """The recorded request, sent as its client sent it: its events (each parsed) or its answer."""
    recorded = RECORDED[name]
    headers = {**recorded["headers"], "Authorization": "Bearer recorded"}
    body, url = recorded["body"], f"{stack.url}{recorded['path']}"
    if body.get("stream"):
        with httpx.stream("POST", url, json=body, headers=headers, timeout=30) as answer:
            assert answer.status_code == 200, answer.read()
            lines = list(answer.iter_lines())
        named = [line.removeprefix("event: ") for line in lines if line.startswith("event: ")]
        data = [json.loads(line.removeprefix("data: ")) for line in lines if line.startswith("data: ")]
        assert named == [event["type"] for event in data] and "ping" in named
        return [EVENTS.validate_python(event, strict=True) for event in data if event["type"] != "ping"]
    answer = httpx.post(url, json=body, headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    kind = MessageTokensCount if recorded["path"].startswith("/v1/messages/count_tokens") else Message
    return kind.model_validate(answer.json(), strict=True)


def test_the_recordings_are_the_clients_own() -> None:
    clients = {record["client"].split()[0] for record in RECORDED.values()}
    assert clients == {"langchain-anthropic", "claude-cli"}
    assert {record["path"].partition("?")[0] for record in RECORDED.values()} == {
        "/v1/messages", "/v1/messages/count_tokens"
    }  # fmt: skip


def test_langchain_invoke_stream_thinking_and_count(stack_once: Stack, fake: FakeModelServer) -> None:
    plain = send(stack_once, "langchain_invoke")
    assert plain.content[0].text == "echo: Weather in Paris?" and plain.stop_reason == "end_turn"
    asked = fake.completions[-1]
    assert asked["messages"][0] == {"role": "system", "content": "Be brief."} and asked["temperature"] == 0.3
    events = send(stack_once, "langchain_stream")
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta")
    assert text == "echo: Weather in Paris?" and events[-1].type == "message_stop"
    thought, said = send(stack_once, "langchain_thinking").content
    assert thought.type == "thinking" and said.text == "echo: Why is the sky blue?"
    assert fake.completions[-1]["chat_template_kwargs"]["enable_thinking"] is True
    counted = send(stack_once, "langchain_count")
    assert counted.input_tokens == (2 + 4) + (3 + 4)  # the fake's count: a word each, four more a message
    assert fake.tokenized[-1]["tools"][0]["function"]["name"] == "get_weather"


def test_langchain_tools_a_call_then_its_result(stack_once: Stack, fake: FakeModelServer) -> None:
    called = send(stack_once, "langchain_tools_0")
    (use,) = called.content
    assert called.stop_reason == "tool_use" and use.name == "get_weather" and use.input == {"echo": "Weather in Paris?"}
    answered = send(stack_once, "langchain_tools_1")
    assert answered.content[0].text == "echo: sunny"
    sent = fake.completions[-1]["messages"]
    assert sent[-2]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert sent[-1] == {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"}


def test_claude_codes_turns_are_answered_in_events_it_reads(stack_once: Stack, fake: FakeModelServer) -> None:
    # Turn 0: the task, with Claude Code's system prompt, its tools, a system message
    # among the messages, adaptive thinking and its effort.
    events = send(stack_once, "claude_code_0")
    assert events[0].type == "message_start" and events[-1].type == "message_stop"
    asked = fake.completions[-1]
    system = asked["messages"][0]
    assert system["role"] == "system" and [m["role"] for m in asked["messages"][1:]] == ["user"]
    assert "x-anthropic-billing-header" not in system["content"]  # a per-request hash: no prefix would match
    assert "Available agent types" in system["content"]  # the system message among the others, added
    assert len(asked["tools"]) == len(RECORDED["claude_code_0"]["body"]["tools"])
    assert asked["chat_template_kwargs"]["enable_thinking"] is True and asked["reasoning_effort"] == "high"
    assert asked["max_tokens"] == 32000 and len(asked["user"]) > 0
    # Turn 1: the result of the Read it was asked to run.
    events = send(stack_once, "claude_code_1")
    said = "".join(e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta")
    assert said == "echo: 1\thello from a file\n2\t"
    sent = fake.completions[-1]["messages"]
    assert sent[-2]["tool_calls"][0]["function"]["name"] == "Read"
    assert sent[-1] == {"role": "tool", "tool_call_id": "toolu_read_1", "content": "1\thello from a file\n2\t"}
