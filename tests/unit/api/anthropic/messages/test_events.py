"""A message's answer as Anthropic's stream events (api/anthropic/messages/events.py):
blocks opened in the order the model said them, each closed before the next, deltas of
their kind; the end with the stop reason and usage; a stream read back from the stored
answer rendered whole; a failure an error event."""

from __future__ import annotations

import json
from typing import Any

import pytest

from api.anthropic.messages.events import MessageEvents
from api.http.statuses import Refusal

pytestmark = pytest.mark.unit

CALL = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "ls", "arguments": ""}}
END = {
    "usage": {"prompt_tokens": 7, "completion_tokens": 3},
    "choices": [
        {
            "index": 0,
            "content": "Hi",
            "finish_reason": "tool_calls",
            "reasoning_content": "hm",
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "ls", "arguments": '{"a": 1}'}}],
        }
    ],
}


def parsed(texts: list[str]) -> list[dict[str, Any]]:
    """Each event's name and data; the name is always its data's type."""
    out = []
    for text in texts:
        head, data = text.strip().split("\n")
        event = json.loads(data.removeprefix("data: "))
        assert head == f"event: {event['type']}"
        out.append(event)
    return out


def render_all(renderer: MessageEvents, pieces: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return parsed([text for piece in pieces for text in renderer.render(piece)])


def test_the_opening_is_message_start_then_a_ping() -> None:
    start, ping = parsed(MessageEvents("j1", "m", None).opening())
    assert start == {
        "type": "message_start",
        "message": {
            "id": "msg_j1",
            "type": "message",
            "role": "assistant",
            "model": "m",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        },
    }
    assert ping == {"type": "ping"}


def test_thinking_text_and_a_tool_call_are_three_blocks_each_closed_before_the_next() -> None:
    events = render_all(
        MessageEvents("j1", "m", None),
        [
            {"index": 0, "text": "", "extra": {"reasoning_content": "h"}},
            {"index": 0, "text": "", "extra": {"reasoning_content": "m"}},
            {"index": 0, "text": "Hi"},
            {"index": 0, "text": "", "extra": {"tool_calls": [CALL]}},
            {"index": 0, "text": "", "extra": {"tool_calls": [{"index": 0, "function": {"arguments": '{"a": '}}]}},
            {"index": 0, "text": "", "extra": {"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}},
            {"end": END},
        ],
    )
    assert [(e["type"], e.get("index")) for e in events] == [
        ("content_block_start", 0),
        ("content_block_delta", 0),
        ("content_block_delta", 0),
        ("content_block_stop", 0),
        ("content_block_start", 1),
        ("content_block_delta", 1),
        ("content_block_stop", 1),
        ("content_block_start", 2),
        ("content_block_delta", 2),
        ("content_block_delta", 2),
        ("content_block_stop", 2),
        ("message_delta", None),
        ("message_stop", None),
    ]
    assert events[0]["content_block"] == {"type": "thinking", "thinking": "", "signature": ""}
    assert events[1]["delta"] == {"type": "thinking_delta", "thinking": "h"}
    assert events[5]["delta"] == {"type": "text_delta", "text": "Hi"}
    assert events[7]["content_block"] == {"type": "tool_use", "id": "call_1", "name": "ls", "input": {}}
    assert [e["delta"]["partial_json"] for e in events[8:10]] == ['{"a": ', "1}"]
    assert events[11] == {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {
            "input_tokens": 7,
            "output_tokens": 3,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def test_the_same_pieces_render_the_same_events_for_every_reader() -> None:
    pieces = [{"index": 0, "text": "a"}, {"index": 0, "text": "b"}, {"end": {"content": "ab", "finish_reason": "stop"}}]

    def read() -> list[str]:
        renderer = MessageEvents("j1", "m", None)
        return [*renderer.opening(), *(text for piece in pieces for text in renderer.render(piece))]

    first = read()
    assert len(first) == 2 + 3 + 3 and read() == first


def test_an_answer_with_nothing_said_has_one_empty_text_block() -> None:
    events = render_all(
        MessageEvents("j1", "m", ["END"]),
        [{"end": {"choices": [{"index": 0, "content": "", "finish_reason": "stop", "stop_reason": "END"}]}}],
    )
    assert [e["type"] for e in events] == ["content_block_start", "content_block_stop", "message_delta", "message_stop"]
    assert events[0]["content_block"] == {"type": "text", "text": ""}
    assert events[2]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "END"}


def test_a_stream_read_back_from_the_stored_answer_is_rendered_whole_from_its_end() -> None:
    events = render_all(
        MessageEvents("j1", "m", None), [{"index": 0, "text": "Hi", "whole": True}, {"end": END, "whole": True}]
    )
    starts = [e["content_block"]["type"] for e in events if e["type"] == "content_block_start"]
    deltas = [e["delta"] for e in events if e["type"] == "content_block_delta"]
    assert starts == ["thinking", "text", "tool_use"]
    assert deltas == [
        {"type": "thinking_delta", "thinking": "hm"},
        {"type": "text_delta", "text": "Hi"},
        {"type": "input_json_delta", "partial_json": '{"a":1}'},
    ]


def test_calls_the_pieces_did_not_bring_are_given_whole_at_the_end() -> None:
    # A stream cut short and read on from the stored answer: its text came, its call did not.
    events = render_all(MessageEvents("j1", "m", None), [{"index": 0, "text": "Hi"}, {"end": END}])
    assert [e["content_block"]["type"] for e in events if e["type"] == "content_block_start"] == ["text", "tool_use"]
    assert events[-2]["delta"]["stop_reason"] == "tool_use"


def test_a_failure_midway_is_anthropics_error_event() -> None:
    (error,) = parsed([MessageEvents("j1", "m", None).failed(Refusal(502, "model server down", "ModelServerFailed"))])
    assert error == {"type": "error", "error": {"type": "api_error", "message": "model server down"}}
