"""A server's own /v1/messages (tasks/model/messages.py): the job's Anthropic request
sent as given (its model and limit the job's, streamed), and Anthropic's events read as
the chat chunks saying the same, joined into the same Completion; a whole message too."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from shared.contract import ModelServerFailed
from tasks.model.http import Reply
from tasks.model.messages import MessagesChunks, messages_body, parse_message
from tasks.model.protocol import ChatRequest
from tasks.model.stream import read_events

pytestmark = pytest.mark.unit

GIVEN = {
    "max_tokens": 900,
    "model": "claude-x",
    "stream": False,
    "system": "s",
    "temperature": 0.2,
    "messages": [{"role": "user", "content": "hi"}],
    "thinking": {"type": "adaptive"},
}


def test_the_clients_request_goes_as_given_for_the_served_model_within_the_jobs_limit() -> None:
    request = ChatRequest(messages=[], tokens_limit=64, anthropic=GIVEN)
    body = messages_body(request, "Qwen/Qwen3-8B")
    assert body == {**GIVEN, "model": "Qwen/Qwen3-8B", "max_tokens": 64, "stream": True}
    assert messages_body(ChatRequest(messages=[], tokens_limit=None, anthropic=GIVEN), None)["max_tokens"] == 900


def events(*said: dict[str, Any]) -> Reply:
    body = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in said)
    return Reply(200, "OK", {"content-type": "text/event-stream"}, io.BytesIO(body.encode()))


STREAM = [
    {"type": "message_start", "message": {"model": "served", "usage": {"input_tokens": 12, "output_tokens": 0}}},
    {"type": "ping"},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hm"}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "x"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Let me"}},
    {"type": "content_block_stop", "index": 1},
    {
        "type": "content_block_start",
        "index": 2,
        "content_block": {"type": "tool_use", "id": "toolu_1", "name": "ls", "input": {}},
    },
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": '{"a":'}},
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": " 1}"}},
    {"type": "content_block_stop", "index": 2},
    {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"output_tokens": 9},
    },
    {"type": "message_stop"},
]


def test_anthropics_events_are_joined_as_a_chat_answer_and_passed_on_as_its_pieces() -> None:
    seen: list[tuple[str, Any]] = []
    chunks = MessagesChunks()
    completion = read_events(
        events(*STREAM), None, lambda i, text, extra: seen.append((text, extra)), translate=chunks.chunk
    )
    (choice,) = completion.choices
    assert choice["content"] == "Let me" and choice["reasoning_content"] == "hm"
    assert choice["finish_reason"] == "tool_calls"
    assert choice["tool_calls"] == [
        {"id": "toolu_1", "type": "function", "function": {"name": "ls", "arguments": '{"a": 1}'}}
    ]
    assert completion.model == "served"
    assert completion.usage == {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21}
    assert [text for text, _ in seen] == ["", "Let me", "", "", ""]
    assert seen[0][1] == {"reasoning_content": "hm"}


def test_a_stop_sequence_is_named_as_vllm_names_its_stop_string_and_a_cut_stream_is_retried() -> None:
    stopped = [
        STREAM[0],
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "x"}},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "stop_sequence", "stop_sequence": "END"},
            "usage": {"output_tokens": 1},
        },
        {"type": "message_stop"},
    ]
    (choice,) = read_events(events(*stopped), None, translate=MessagesChunks().chunk).choices
    assert (choice["finish_reason"], choice["stop_reason"]) == ("stop", "END")
    from tasks.model.protocol import Retryable

    with pytest.raises(Retryable):  # no message_stop, no stop reason: cut short
        read_events(events(*stopped[:3]), None, translate=MessagesChunks().chunk)
    with pytest.raises(Retryable, match="overloaded"):
        read_events(
            events({"type": "error", "error": {"type": "overloaded_error", "message": "overloaded"}}),
            None,
            translate=MessagesChunks().chunk,
        )


def test_a_whole_message_is_read_as_a_chat_answer() -> None:
    completion = parse_message(
        {
            "model": "served",
            "stop_reason": "max_tokens",
            "usage": {"input_tokens": 3, "output_tokens": 2},
            "content": [
                {"type": "thinking", "thinking": "hm"},
                {"type": "text", "text": "A"},
                {"type": "tool_use", "id": "t", "name": "f", "input": {"a": 1}},
            ],
        }
    )
    (choice,) = completion.choices
    assert choice == {
        "index": 0,
        "content": "A",
        "finish_reason": "length",
        "reasoning_content": "hm",
        "tool_calls": [{"id": "t", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}],
    }
    assert completion.usage == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    with pytest.raises(ModelServerFailed):
        parse_message({"type": "error"})
