"""Anthropic's Messages API through the queue, as the official ``anthropic`` SDK speaks it
(strict: every answer and stream event parsed into its types): text, system prompts,
stop sequences, the sampling fields, tools and tool results, images and documents,
thinking, streams (the SDK's helper and raw events, resumed with Last-Event-ID), token
counts, and errors in Anthropic's shape."""

from __future__ import annotations

import base64
import json
from typing import Any

import anthropic
import httpx
import pytest

from testing.anthropic_sdk import client
from testing.fake_model_server import Failure, FakeModelServer
from tests.conftest import Stack, StackFactory

pytestmark = pytest.mark.integration

MODEL = "fake-model"
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n fake").decode()


def test_a_message_is_answered_in_anthropics_shape(stack: Stack, fake: FakeModelServer) -> None:
    sdk = client(stack)
    message = sdk.messages.create(model=MODEL, max_tokens=50, messages=[{"role": "user", "content": "one two"}])
    assert message.type == "message" and message.role == "assistant" and message.id.startswith("msg_")
    assert message.model == MODEL and message.stop_reason == "end_turn" and message.stop_sequence is None
    assert [(block.type, block.text) for block in message.content] == [("text", "echo: one two")]  # type: ignore[union-attr]
    assert message.usage.input_tokens == 6 and message.usage.output_tokens == 3
    (asked,) = fake.completions
    assert asked["messages"] == [{"role": "user", "content": "one two"}] and asked["max_tokens"] == 50
    assert "temperature" not in asked  # the model server's own default


def test_system_stop_sequences_and_sampling_reach_the_model_server(stack: Stack, fake: FakeModelServer) -> None:
    sdk = client(stack)
    message = sdk.messages.create(
        # The SDK of today takes the sampling fields as extra body (langchain-anthropic sends them).
        model=MODEL, max_tokens=50, extra_body={"temperature": 0.5, "top_p": 0.9, "top_k": 20},
        stop_sequences=["STOP", "END"],
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "Be kind."}],
        metadata={"user_id": "user-7"},
        messages=[{"role": "user", "content": [{"type": "text", "text": "a b"}, {"type": "text", "text": "c STOP d"}]}],
    )  # fmt: skip
    asked = fake.completions[-1]
    assert asked["messages"] == [{"role": "system", "content": "Be brief.\n\nBe kind."},
                                 {"role": "user", "content": "a b\nc STOP d"}]  # fmt: skip
    assert (asked["temperature"], asked["top_p"], asked["top_k"]) == (0.5, 0.9, 20)
    assert asked["stop"] == ["STOP", "END"] and asked["user"] == "user-7"
    # The server named the stop string that ended it (as vLLM does): Anthropic's stop_sequence.
    assert message.stop_reason == "stop_sequence" and message.stop_sequence == "STOP"
    assert message.content[0].text == "echo: a b\nc "  # type: ignore[union-attr]


def test_an_answer_cut_at_max_tokens_says_so(stack: Stack, fake: FakeModelServer) -> None:
    message = client(stack).messages.create(model=MODEL, max_tokens=2,
                                            messages=[{"role": "user", "content": "one two three"}])  # fmt: skip
    assert message.stop_reason == "max_tokens" and message.content[0].text == "echo: one"  # type: ignore[union-attr]


def test_a_tool_use_and_its_result_make_a_conversation(stack: Stack, fake: FakeModelServer) -> None:
    sdk = client(stack)
    asked = [{"role": "user", "content": "Paris?"}]
    called = sdk.messages.create(model=MODEL, max_tokens=50, tools=[WEATHER], messages=asked)  # type: ignore[list-item]
    assert called.stop_reason == "tool_use"
    (use,) = called.content
    assert use.type == "tool_use" and use.name == "get_weather" and use.input == {"echo": "Paris?"}
    function = {"name": "get_weather", "description": "The weather in a city", "parameters": WEATHER["input_schema"]}
    assert fake.completions[-1]["tools"] == [{"type": "function", "function": function}]
    # The tool's result goes back, with the assistant's turn as the SDK gives it.
    answered = sdk.messages.create(
        model=MODEL, max_tokens=50, tools=[WEATHER],  # type: ignore[list-item]
        messages=[*asked, {"role": "assistant", "content": called.content},  # type: ignore[list-item]
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                                "content": [{"type": "text", "text": "sunny"}]}]}],
    )  # fmt: skip
    sent = fake.completions[-1]["messages"]
    assert sent[1] == {"role": "assistant", "content": None, "tool_calls": [{"id": use.id, "type": "function",
                       "function": {"name": "get_weather", "arguments": '{"echo": "Paris?"}'}}]}  # fmt: skip
    assert sent[2:] == [{"role": "tool", "tool_call_id": use.id, "content": "sunny"}]
    assert answered.stop_reason == "end_turn" and answered.content[0].text == "echo: sunny"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("choice", "sent", "stop"),
    [
        ({"type": "auto"}, "auto", "tool_use"),
        ({"type": "any", "disable_parallel_tool_use": True}, "required", "tool_use"),
        ({"type": "tool", "name": "get_time"}, {"type": "function", "function": {"name": "get_time"}}, "tool_use"),
        ({"type": "none"}, "none", "end_turn"),
    ],
)
def test_each_tool_choice_is_the_chat_requests(
    stack_once: Stack, fake: FakeModelServer, choice: dict[str, Any], sent: Any, stop: str
) -> None:
    tools = [WEATHER, {"name": "get_time", "input_schema": {"type": "object"}}]
    message = client(stack_once).messages.create(model=MODEL, max_tokens=50, tools=tools, tool_choice=choice,  # type: ignore[arg-type]
                                                 messages=[{"role": "user", "content": "x"}])  # fmt: skip
    assert fake.completions[-1]["tool_choice"] == sent and message.stop_reason == stop
    assert fake.completions[-1].get("parallel_tool_calls") is (
        False if choice.get("disable_parallel_tool_use") else None
    )
    if choice["type"] == "tool":
        assert message.content[0].name == "get_time"  # type: ignore[union-attr]


def test_images_and_documents_reach_the_model_server_as_content_parts(stack_once: Stack, fake: FakeModelServer) -> None:
    content = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {
            "type": "document",
            "title": "Notes",
            "source": {"type": "text", "media_type": "text/plain", "data": "a note"},
        },
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}},
        {"type": "text", "text": "What are these?"},
    ]
    message = client(stack_once).messages.create(model=MODEL, max_tokens=50,
                                                 messages=[{"role": "user", "content": content}])  # type: ignore[typeddict-item]  # fmt: skip
    (user,) = fake.completions[-1]["messages"]
    assert user["content"] == [
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
        {"type": "text", "text": "Notes"},
        {"type": "text", "text": "a note"},
        {"type": "file", "file": {"filename": "document.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}},
        {"type": "text", "text": "What are these?"},
    ]
    assert message.content[0].text.startswith("echo: ")  # type: ignore[union-attr]


def test_thinking_asks_the_chat_template_and_answers_a_thinking_block(stack: Stack, fake: FakeModelServer) -> None:
    sdk = client(stack)
    message = sdk.messages.create(model=MODEL, max_tokens=2000, thinking={"type": "enabled", "budget_tokens": 1024},
                                  messages=[{"role": "user", "content": "why"}])  # fmt: skip
    assert fake.completions[-1]["chat_template_kwargs"] == {"enable_thinking": True, "thinking": True}
    thought, said = message.content
    assert thought.type == "thinking" and thought.thinking == "thinking about: why" and thought.signature == ""
    assert said.type == "text" and said.text == "echo: why"
    # Given back in the next turn (as Claude Code does), the thinking block is dropped.
    sdk.messages.create(model=MODEL, max_tokens=2000, thinking={"type": "disabled"}, messages=[
        {"role": "user", "content": "why"}, {"role": "assistant", "content": message.content},  # type: ignore[list-item]
        {"role": "user", "content": "and?"}])  # fmt: skip
    asked = fake.completions[-1]
    assert asked["messages"][1] == {"role": "assistant", "content": "echo: why"}
    assert asked["chat_template_kwargs"] == {"enable_thinking": False, "thinking": False}


def test_a_stream_through_the_sdks_helper_ends_with_the_message_create_gives(
    stack: Stack, fake: FakeModelServer
) -> None:
    sdk = client(stack)
    asked: dict[str, Any] = {"model": MODEL, "max_tokens": 50, "messages": [{"role": "user", "content": "a b c"}]}
    with sdk.messages.stream(**asked) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(texts) == "echo: a b c" and len(texts) == 4
    whole = sdk.messages.create(**asked)
    # The helper's blocks are its parsed kind (a parsed_output beside): the same fields otherwise.
    assert [block.model_dump(exclude={"parsed_output"}) for block in final.content] == [
        block.model_dump() for block in whole.content
    ]
    assert final.stop_reason == whole.stop_reason == "end_turn"
    assert (
        final.usage.input_tokens == whole.usage.input_tokens and final.usage.output_tokens == whole.usage.output_tokens
    )


def test_every_stream_event_type_parses_tools_and_thinking_included(stack: Stack, fake: FakeModelServer) -> None:
    sdk = client(stack)
    events = list(sdk.messages.create(model=MODEL, max_tokens=2000, stream=True, tools=[WEATHER],  # type: ignore[list-item]
                                      thinking={"type": "enabled", "budget_tokens": 1024},
                                      messages=[{"role": "user", "content": "Paris?"}]))  # fmt: skip
    kinds = [event.type for event in events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    deltas = [event.delta.type for event in events if event.type == "content_block_delta"]
    assert set(deltas) == {"thinking_delta", "input_json_delta"}
    starts = [event.content_block for event in events if event.type == "content_block_start"]
    assert [block.type for block in starts] == ["thinking", "tool_use"] and starts[1].name == "get_weather"
    assert [event.index for event in events if event.type == "content_block_stop"] == [0, 1]
    arguments = "".join(event.delta.partial_json for event in events  # type: ignore[union-attr]
                        if event.type == "content_block_delta" and event.delta.type == "input_json_delta")  # fmt: skip
    assert json.loads(arguments) == {"echo": "Paris?"}
    end = events[-2]
    assert end.delta.stop_reason == "tool_use" and end.usage.output_tokens > 0 and end.usage.input_tokens  # type: ignore[union-attr]
    # The SDK's helper assembles the same message.
    with sdk.messages.stream(model=MODEL, max_tokens=2000, tools=[WEATHER],  # type: ignore[list-item]
                             thinking={"type": "enabled", "budget_tokens": 1024},
                             messages=[{"role": "user", "content": "Paris?"}]) as stream:  # fmt: skip
        final = stream.get_final_message()
    thought, use = final.content
    assert thought.thinking == "thinking about: Paris?" and use.input == {"echo": "Paris?"}  # type: ignore[union-attr]


def raw_events(response: httpx.Response) -> list[dict[str, Any]]:
    """The SSE events of a body: id, event and data each."""
    out = []
    for chunk in response.text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in chunk.splitlines())
        out.append({"id": int(fields["id"]), "event": fields["event"], "data": json.loads(fields["data"])})
    return out


def test_a_stream_is_anthropics_events_with_a_ping_and_resumes_after_the_last_event_had(
    stack: Stack, fake: FakeModelServer
) -> None:
    body = {"model": MODEL, "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": "x y"}]}
    headers = {"x-api-key": "k", "anthropic-version": "2023-06-01", "Idempotency-Key": "anthropic-resume-1"}
    first = httpx.post(f"{stack.url}/v1/messages", json=body, headers=headers, timeout=30)
    assert first.status_code == 200 and first.headers["content-type"].startswith("text/event-stream")
    events = raw_events(first)
    assert [event["event"] for event in events] == [
        "message_start", "ping", "content_block_start", "content_block_delta", "content_block_delta",
        "content_block_delta", "content_block_stop", "message_delta", "message_stop",
    ]  # fmt: skip
    assert all(event["event"] == event["data"]["type"] for event in events)
    assert [event["id"] for event in events] == list(range(len(events)))
    assert events[0]["data"]["message"]["id"] == "msg_anthropic-resume-1"
    again = httpx.post(f"{stack.url}/v1/messages", json=body, headers={**headers, "Last-Event-ID": "4"}, timeout=30)
    assert raw_events(again) == events[5:]
    assert len(fake.completions) == 1  # one job, read twice


def test_count_tokens_asks_the_model_servers_tokenizer(stack: Stack, fake: FakeModelServer) -> None:
    counted = client(stack).messages.count_tokens(
        model=MODEL, system="Be brief.", tools=[WEATHER],  # type: ignore[list-item]
        messages=[{"role": "user", "content": "one two three"}],
    )  # fmt: skip
    assert counted.input_tokens == (2 + 4) + (3 + 4)  # the fake's count: a word each, four more a message
    (asked,) = fake.tokenized
    assert asked["messages"] == [{"role": "system", "content": "Be brief."},
                                 {"role": "user", "content": "one two three"}]  # fmt: skip
    assert asked["tools"][0]["function"]["name"] == "get_weather" and fake.completions == []
    fake.tokenizer = None  # a server that counts nothing (Ollama, TGI)
    with pytest.raises(anthropic.APIStatusError) as refused:
        client(stack).messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert refused.value.status_code == 501 and refused.value.body["error"]["type"] == "api_error"  # type: ignore[index]


def test_errors_are_anthropics_shape_and_name_the_field(stack: Stack, fake: FakeModelServer) -> None:
    sdk = client(stack)
    for body, field in (
        ({"model": MODEL, "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
        ({"model": MODEL, "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
        ({"model": MODEL, "max_tokens": 10**9, "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
        ({"model": MODEL, "max_tokens": 5, "messages": []}, "messages"),
        ({"model": MODEL, "max_tokens": 5, "temperature": 1.5, "messages": [{"role": "user", "content": "x"}]},
         "temperature"),
        ({"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "video"}]}]},
         "messages.0.content.0.type"),
        ({"model": MODEL, "max_tokens": 50, "thinking": {"type": "enabled", "budget_tokens": 60},
          "messages": [{"role": "user", "content": "x"}]}, "thinking.budget_tokens"),
        ({"model": MODEL, "max_tokens": 5, "tools": [{"type": "web_search_20250305", "name": "web_search"}],
          "messages": [{"role": "user", "content": "x"}]}, "tools.0.type"),
    ):  # fmt: skip
        try:
            sdk.post("/v1/messages", body=body, cast_to=anthropic.types.Message)
        except anthropic.BadRequestError as refused:
            error = refused.body
        else:
            raise AssertionError(f"{field}: answered")
        assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error", error  # type: ignore[index]
        assert error["error"]["message"].startswith(f"{field}:"), (field, error)  # type: ignore[index]
    assert fake.completions == []


@pytest.fixture
def keyed(make_stack: StackFactory, tmp_path: Any) -> Stack:
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text("tenants:\n  - name: alpha\n    keys: [alpha-key]\n    quotas: {requests_per_minute: 4}\n")
    return make_stack(API_KEYS_FILE=str(tenants))


def test_the_key_comes_in_x_api_key_or_bearer_and_a_rate_limit_is_a_429_with_retry_after(
    keyed: Stack, fake: FakeModelServer
) -> None:
    asked: dict[str, Any] = {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    assert client(keyed, "alpha-key").messages.create(**asked).content  # x-api-key, as the SDK sends it
    bearer = anthropic.Anthropic(base_url=keyed.url, auth_token="alpha-key", max_retries=0)  # Claude Code's AUTH_TOKEN
    assert bearer.messages.create(**asked).content
    missing = httpx.post(f"{keyed.url}/v1/messages", json=asked)
    assert missing.status_code == 401 and missing.json()["error"]["type"] == "authentication_error"
    assert "x-api-key" in missing.json()["error"]["message"]
    with pytest.raises(anthropic.AuthenticationError) as refused:
        client(keyed, "wrong-key").messages.create(**asked)
    assert refused.value.body["error"]["message"] == "invalid API key"  # type: ignore[index]
    # Four requests a minute: the fifth is refused, saying when to try again.
    with pytest.raises(anthropic.RateLimitError) as limited:
        for _ in range(4):
            client(keyed, "alpha-key").messages.count_tokens(model=MODEL, messages=asked["messages"])
    assert limited.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert int(limited.value.response.headers["retry-after"]) >= 1


def test_a_full_queue_is_anthropics_529_overloaded(make_stack: StackFactory, fake: FakeModelServer) -> None:
    stack = make_stack(workers=0, MAX_QUEUED_JOBS="1", WAIT_TIMEOUT="1")
    asked: dict[str, Any] = {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    with pytest.raises(anthropic.APIStatusError) as waited:  # queued, and not run: no worker
        client(stack).messages.create(**asked)
    assert waited.value.status_code == 504 and waited.value.body["error"]["type"] == "timeout_error"  # type: ignore[index]
    with pytest.raises(anthropic.InternalServerError) as full:
        client(stack).messages.create(**asked)
    assert full.value.status_code == 529 and full.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    assert full.value.response.headers.get("retry-after")


def test_a_model_whose_server_serves_messages_gets_them_as_given(
    make_stack: StackFactory, fake: FakeModelServer
) -> None:
    registry = {"models": [{"name": "native", "url": fake.url, "served_name": MODEL, "messages_api": True}]}
    sdk = client(make_stack(MODELS=json.dumps(registry)))
    text = {"type": "text", "text": "Paris?", "cache_control": {"type": "ephemeral"}}
    asked: dict[str, Any] = {
        "model": "native", "max_tokens": 50, "system": [{"type": "text", "text": "Be brief."}],
        "messages": [{"role": "user", "content": [text]}],
    }  # fmt: skip
    message = sdk.messages.create(**asked)
    assert message.content[0].text == "echo: Paris?" and message.model == "native"  # type: ignore[union-attr]
    assert message.usage.input_tokens > 0 and message.stop_reason == "end_turn"
    (sent,) = fake.messages_asked
    assert sent == {**asked, "model": MODEL, "stream": True} and fake.completions == []
    # Streamed, with a tool and thinking: the server's events become the gateway's, the same blocks.
    with sdk.messages.stream(**asked, tools=[WEATHER], thinking={"type": "enabled", "budget_tokens": 20}) as stream:  # type: ignore[list-item]
        final = stream.get_final_message()
    thought, use = final.content
    assert thought.thinking == "thinking about: Paris?" and use.input == {"echo": "Paris?"}  # type: ignore[union-attr]
    assert final.stop_reason == "tool_use" and fake.messages_asked[-1]["thinking"]["budget_tokens"] == 20


def test_a_failure_after_the_stream_began_is_anthropics_error_event(stack: Stack, fake: FakeModelServer) -> None:
    # The model server refuses the job once it runs: the stream had begun (message_start, ping).
    message = "the model does not take this parameter"
    fake.failures = [Failure(400, {"error": {"message": message, "type": "BadRequestError"}})]
    seen: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as failed:
        for event in client(stack).messages.create(model=MODEL, max_tokens=5, stream=True,
                                                   messages=[{"role": "user", "content": "x"}]):  # fmt: skip
            seen.append(event.type)
    assert seen == ["message_start"]
    assert failed.value.body == {"type": "error", "error": {"type": "invalid_request_error", "message": message}}


def test_a_body_over_max_body_bytes_is_anthropics_request_too_large(stack: Stack, fake: FakeModelServer) -> None:
    huge = {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "x" * (2 * 1024 * 1024)}]}
    with pytest.raises(anthropic.APIStatusError) as refused:
        client(stack).messages.create(**huge)
    assert refused.value.status_code == 413 and refused.value.body["error"]["type"] == "request_too_large"  # type: ignore[index]
    assert "MAX_BODY_BYTES" in refused.value.body["error"]["message"]  # type: ignore[index]
    assert fake.completions == []
