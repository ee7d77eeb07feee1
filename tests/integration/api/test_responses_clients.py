"""Bodies the OpenAI Agents SDK and LangChain's ChatOpenAI(use_responses_api=True)
send to /v1/responses, recorded in tests/fixtures/responses_clients/ by the script there
(run in a throwaway virtualenv: both pin their own openai), sent through the real
pipeline as recorded; each answer is validated against the official `openai` SDK's
types, streamed events included."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from testing.fake_model_server import FakeModelServer
from testing.processes import ROOT
from tests.conftest import Stack

pytestmark = pytest.mark.integration

FIXTURES = ROOT / "tests" / "fixtures" / "responses_clients"
RECORDED = {path.stem: json.loads(path.read_text()) for path in sorted(FIXTURES.glob("*.json"))}
EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)


def send(stack: Stack, name: str) -> Any:
    recorded = RECORDED[name]
    body, url = recorded["body"], f"{stack.url}{recorded['path']}"
    if body.get("stream"):
        with httpx.stream("POST", url, json=body, timeout=30) as answer:
            assert answer.status_code == 200
            data = [line[6:] for line in answer.iter_lines() if line.startswith("data: ")]
        events = [EVENTS.validate_python(json.loads(d), strict=True) for d in data]
        assert [e.sequence_number for e in events] == list(range(len(events)))
        return events
    answer = httpx.post(url, json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    return Response.model_validate(answer.json(), strict=True)


def test_the_recordings_are_the_clients_own() -> None:
    clients = {record["client"].split()[0] for record in RECORDED.values()}
    assert clients == {"openai-agents", "langchain-openai"}
    assert all(record["path"] == "/v1/responses" for record in RECORDED.values())


@pytest.mark.parametrize("run", ["agents_tool_run", "agents_streamed_run"])
def test_an_agent_with_a_function_tool_runs_to_its_end(stack_once: Stack, fake: FakeModelServer, run: str) -> None:
    # Turn 0: the agent's question; the model calls the tool.
    first = send(stack_once, f"{run}_0")
    final = first[-1].response if isinstance(first, list) else first
    (call,) = [item for item in final.output if item.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"echo": "Weather in Paris?"}
    tools = fake.completions[-1]["tools"]
    assert tools[0]["function"]["name"] == "get_weather" and tools[0]["function"]["strict"] is True
    # Turn 1: the agent sends the whole run so far, the tool's output last.
    second = send(stack_once, f"{run}_1")
    final = second[-1].response if isinstance(second, list) else second
    assert final.status == "completed" and final.output_text == "echo: sunny"
    assert fake.completions[-1]["messages"] == [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]  # fmt: skip


def test_langchain_responses_plain_streamed_and_with_tools(stack_once: Stack, fake: FakeModelServer) -> None:
    plain = send(stack_once, "langchain_responses_0")
    assert plain.output_text == "echo: Weather in Paris?" and plain.temperature == 0.3
    assert fake.completions[-1]["messages"][0] == {"role": "system", "content": "Be brief."}
    events = send(stack_once, "langchain_responses_stream_0")
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "echo: Weather in Paris?" == events[-1].response.output_text
    tools = send(stack_once, "langchain_responses_tools_0")
    assert tools.output[0].type == "function_call" and tools.output[0].name == "get_weather_lc"
