"""Bodies other OpenAI clients send, through the real pipeline: LangChain's ChatOpenAI
and OpenAI (langchain-openai), recorded in tests/fixtures/openai_clients/ by the script
there, run in a throwaway virtualenv (its docstring says how; langchain-openai pins its
own openai and langchain-core). Each body is sent as recorded, and the answer is
validated against the official `openai` SDK's types."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from testing.fake_model_server import FakeModelServer
from testing.processes import ROOT
from tests.conftest import Stack

pytestmark = pytest.mark.integration

FIXTURES = ROOT / "tests" / "fixtures" / "openai_clients"
RECORDED = {path.stem: json.loads(path.read_text()) for path in sorted(FIXTURES.glob("*.json"))}


def send(stack: Stack, name: str) -> Any:
    recorded = RECORDED[name]
    body = recorded["body"]
    url = f"{stack.url}{recorded['path']}"
    if body.get("stream"):
        with httpx.stream("POST", url, json=body, timeout=30) as answer:
            assert answer.status_code == 200
            lines = [line for line in answer.iter_lines() if line.startswith("data: ")]
        assert lines[-1] == "data: [DONE]"
        return [ChatCompletionChunk.model_validate(json.loads(line[6:])) for line in lines[:-1]]
    answer = httpx.post(url, json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    kind = Completion if recorded["path"].endswith("/v1/completions") else ChatCompletion
    return kind.model_validate(answer.json())


def test_the_recordings_are_langchains_own() -> None:
    assert {record["client"].split()[0] for record in RECORDED.values()} == {"langchain-openai"}
    assert RECORDED["langchain_tool_result"]["body"]["messages"][2]["content"] is None  # tool calls alone


def test_langchain_chat_streamed_and_not(stack: Stack, fake: FakeModelServer) -> None:
    answer = send(stack, "langchain_chat")
    assert answer.choices[0].message.content == "echo: Weather in Paris?"
    chunks = send(stack, "langchain_chat_stream")
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: Weather in Paris?"
    assert chunks[-1].usage is not None  # stream_options.include_usage was honoured
    assert fake.completions[0]["max_tokens"] == 40  # max_completion_tokens, mapped


def test_langchain_tools_and_their_results(stack: Stack, fake: FakeModelServer) -> None:
    called = send(stack, "langchain_tools")
    (call,) = called.choices[0].message.tool_calls
    assert call.function.name == "get_weather" and called.choices[0].finish_reason == "tool_calls"
    answered = send(stack, "langchain_tool_result")
    assert answered.choices[0].message.content == "echo: sunny, 21 C"
    assert fake.completions[-1]["messages"] == RECORDED["langchain_tool_result"]["body"]["messages"]


def test_langchain_structured_output(stack: Stack, fake: FakeModelServer) -> None:
    answer = send(stack, "langchain_structured_output")
    assert json.loads(answer.choices[0].message.content) == {"echo": "Weather in Paris?"}
    assert fake.completions[0]["response_format"] == RECORDED["langchain_structured_output"]["body"]["response_format"]


def test_langchain_completion(stack: Stack, fake: FakeModelServer) -> None:
    answer = send(stack, "langchain_completion")
    assert answer.choices[0].text == "echo: Once upon a time"
    assert fake.raw_completions[0]["prompt"] == ["Once upon a time"]
