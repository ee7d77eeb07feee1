"""A response as OpenAI's objects (api/openai/responses/objects.py): the response, and its
typed events numbered in sequence, the same for every reader."""

from __future__ import annotations

import json
from typing import Any

import pytest

from api.http.statuses import Refusal
from api.openai.responses.objects import ResponseEvents, error_code, response_object

pytestmark = pytest.mark.unit

RECORD = {"id": "resp_r", "tenant": "default", "created_at": 100, "model": "m",
          "request": {"instructions": "be brief", "max_output_tokens": 50, "store": True,
                      "tools": [{"type": "function", "name": "f"}]}}  # fmt: skip


def test_a_queued_response_repeats_what_was_asked_and_has_no_output_yet() -> None:
    queued = response_object(RECORD, "queued")
    assert (queued["id"], queued["status"], queued["output"], queued["usage"]) == ("resp_r", "queued", [], None)
    assert queued["instructions"] == "be brief" and queued["max_output_tokens"] == 50
    assert queued["tools"] == [{"type": "function", "name": "f", "description": None, "parameters": None,
                                "strict": True}]  # fmt: skip
    assert queued["text"] == {"format": {"type": "text"}} and queued["tool_choice"] == "auto"
    assert queued["completed_at"] is None  # present, null until it is done (Open Responses)


def test_a_finished_response_has_its_output_usage_and_status_from_the_answer() -> None:
    answer = {"content": "hi", "finish_reason": "length", "model": "served", "usage": {"completion_tokens": 1}}
    done = response_object(RECORD, "completed", answer, completed_at=123.9)
    assert done["status"] == "incomplete" and done["incomplete_details"] == {"reason": "max_output_tokens"}
    assert done["output"][0]["content"][0]["text"] == "hi" and done["model"] == "served"
    assert done["usage"]["output_tokens"] == 1 and done["completed_at"] == 123
    assert [error_code(s) for s in (429, 422, 500)] == ["rate_limit_exceeded", "invalid_prompt", "server_error"]


def events(rendered: list[str]) -> list[dict[str, Any]]:
    return [json.loads(text.split("data: ", 1)[1]) for text in rendered]


def test_a_streams_events_are_numbered_text_then_calls_then_the_end() -> None:
    renderer = ResponseEvents(RECORD)
    sent = events(renderer.opening())
    call = {"index": 0, "id": "call_1", "function": {"name": "f", "arguments": '{"a":'}}
    sent += events(renderer.render({"index": 0, "text": "Hel"}))
    sent += events(renderer.render({"index": 0, "text": "lo"}))
    sent += events(renderer.render({"index": 1, "text": "another choice: not a response's"}))
    sent += events(renderer.render({"index": 0, "text": "", "extra": {"tool_calls": [call]}}))
    sent += events(renderer.render({"index": 0, "text": "", "extra": {"tool_calls": [{"index": 0, "function": {
        "arguments": "1}"}}]}}))  # fmt: skip
    sent += events(renderer.render({"end": {"content": "Hello", "finish_reason": "tool_calls"}, "at": 200.0}))
    assert [e["sequence_number"] for e in sent] == list(range(len(sent)))
    assert [e["type"] for e in sent] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta", "response.output_item.added",
        "response.function_call_arguments.delta", "response.function_call_arguments.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.function_call_arguments.done", "response.output_item.done", "response.completed",
    ]  # fmt: skip
    assert sent[0]["response"]["status"] == "in_progress"
    final = sent[-1]["response"]
    assert final["output"][0]["content"][0]["text"] == "Hello" and final["completed_at"] == 200
    assert final["output"][1]["arguments"] == '{"a":1}' and final["output"][1]["call_id"] == "call_1"


def test_a_background_responses_stream_opens_queued_and_a_failure_is_its_last_event() -> None:
    background = {**RECORD, "request": {"background": True}}
    assert events(ResponseEvents(background).opening())[0]["response"]["status"] == "queued"
    failed = events([ResponseEvents(RECORD).failed(Refusal(502, "model server down", "ModelServerFailed"))])[0]
    assert failed["type"] == "response.failed" and failed["response"]["error"] == {
        "code": "server_error", "message": "model server down"}  # fmt: skip
    cancelled = events([ResponseEvents(RECORD).failed(Refusal(409, "job j was cancelled", "JobCancelled"))])[0]
    assert cancelled["type"] == "error" and cancelled["code"] == "cancelled"


def test_an_empty_answer_is_one_empty_message() -> None:
    renderer = ResponseEvents(RECORD)
    sent = events(renderer.render({"end": {"content": "", "finish_reason": "stop"}}))
    assert sent[-1]["response"]["output"][0]["content"][0]["text"] == ""
