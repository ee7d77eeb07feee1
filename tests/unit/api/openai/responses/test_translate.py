"""Responses and chat completions, both ways (api/openai/responses/translate.py): input
items made chat messages and a job, the chat answer made output items."""

from __future__ import annotations

from typing import Any

import pytest

from api.errors import InvalidInput
from api.openai.responses.translate import (
    as_messages,
    chat_messages,
    chat_tool_choice,
    chat_tools,
    finished_status,
    input_items,
    output_items,
    response_format,
    response_job,
    usage,
)
from api.openai.responses.types import ResponsesRequest

pytestmark = pytest.mark.unit

CALL = {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": '{"city":"Paris"}'}


def test_a_string_input_is_one_user_message_and_each_item_has_an_id_stable_across_reads() -> None:
    (item,) = input_items("hi", "resp_abc")
    assert item == {"id": "in_abc_0", "type": "message", "role": "user", "content": [{"type": "input_text",
                                                                                      "text": "hi"}]}  # fmt: skip
    assert (
        input_items([{"type": "message", "role": "user", "content": "x", "id": "mine"}], "resp_abc")[0]["id"] == "mine"
    )


def test_a_conversation_becomes_chat_messages_calls_made_together_in_one_assistant_message() -> None:
    items = input_items([
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "input_text", "text": "look: "},
                                     {"type": "input_image", "image_url": "data:img"}]},
        CALL, {**CALL, "call_id": "c2", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": [{"type": "input_text", "text": "sunny"}]},
        {"role": "assistant", "content": "It is sunny."},
    ], "resp_x")  # fmt: skip
    messages = chat_messages("You help.", items)
    assert messages[0] == {"role": "system", "content": "You help."}
    assert messages[1] == {"role": "system", "content": "be brief"}  # developer, as chat servers know it
    assert messages[2]["content"] == [{"type": "text", "text": "look: "},
                                      {"type": "image_url", "image_url": {"url": "data:img"}}]  # fmt: skip
    assert [call["id"] for call in messages[3]["tool_calls"]] == ["c1", "c2"] and messages[3]["content"] is None
    assert messages[4] == {"role": "tool", "tool_call_id": "c1", "content": "sunny"}
    assert messages[5] == {"role": "assistant", "content": "It is sunny."} and len(messages) == 6


@pytest.mark.parametrize(
    ("raw", "said"),
    [
        ([{"role": "wizard", "content": "x"}], "input[0].role"),
        ([{"role": "user", "content": 5}], "input[0].content"),
        ([{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}], "input[0].content[0].type"),
        ([{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}], "file ids are not served"),
        ([{"type": "function_call", "call_id": "c", "name": "f"}], "input[0].arguments"),
        ([{"type": "function_call_output", "call_id": "c", "output": 3}], "input[0].output"),
        ([{"type": "item_reference", "id": "x"}], "item references are not served"),
        ([{"type": "web_search_call"}], "'web_search_call' is not served"),
    ],
)
def test_an_input_item_the_gateway_cannot_serve_is_refused_naming_it(raw: list[dict[str, Any]], said: str) -> None:
    with pytest.raises(InvalidInput, match=said.replace("[", r"\[").replace("]", r"\]")):
        input_items(raw, "resp_x")


def test_tools_formats_and_choices_become_chat_completions_and_built_in_tools_are_refused() -> None:
    assert chat_tools([{"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": None}]) == [
        {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    ]
    with pytest.raises(InvalidInput, match="only function tools are served, not 'web_search'"):
        chat_tools([{"type": "web_search"}])
    assert chat_tool_choice({"type": "function", "name": "f"}) == {"type": "function", "function": {"name": "f"}}
    assert chat_tool_choice("required") == "required"
    schema = {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": True}
    assert response_format({"format": schema}) == {"type": "json_schema", "json_schema": {
        "name": "out", "schema": {"type": "object"}, "strict": True}}  # fmt: skip
    assert response_format({"format": {"type": "text"}}) is None
    with pytest.raises(InvalidInput, match="names its name and schema"):
        response_format({"format": {"type": "json_schema"}})


def test_a_request_is_a_chat_job_what_it_translates_cannot_be_overridden() -> None:
    body = ResponsesRequest.model_validate({"input": "hi", "model": "m", "max_output_tokens": 9, "top_p": 0.5,
                                            "reasoning": {"effort": "low"}, "top_k": 3})  # fmt: skip
    job = response_job(body, [{"role": "user", "content": "hi"}])
    assert job["response"] is True and job["meta"]["tokens_limit"] == 9 and job["meta"]["sampling"] == {"top_p": 0.5}
    assert job["openai"] == {"messages": [{"role": "user", "content": "hi"}], "top_k": 3}  # reasoning: ignored
    for name in ("max_tokens", "messages", "response_format", "n", "stop"):
        with pytest.raises(InvalidInput, match=f"{name}: not a field of /v1/responses"):
            response_job(ResponsesRequest.model_validate({"input": "x", name: 1}), [])


def test_an_answer_is_its_message_then_its_calls_and_one_cut_short_is_incomplete() -> None:
    answer = {"choices": [{"index": 0, "content": "", "finish_reason": "tool_calls",
                           "tool_calls": [{"id": "call_9", "function": {"name": "f", "arguments": "{}"}}]}],
              "usage": {"prompt_tokens": 4, "completion_tokens": 2}}  # fmt: skip
    (call,) = output_items("resp_r", answer)
    assert call == {"id": "fc_r_0", "type": "function_call", "status": "completed", "call_id": "call_9",
                    "name": "f", "arguments": "{}"}  # fmt: skip
    (message,) = output_items("resp_r", {"content": "", "finish_reason": "stop"})  # an empty answer: one message
    assert message["content"] == [{"type": "output_text", "text": "", "annotations": [], "logprobs": []}]
    assert usage(answer)["total_tokens"] == 6 and usage({}) is None  # no usage sent: null, not zeros
    assert usage(answer)["input_tokens_details"]["cached_tokens"] == 0
    cached = {"prompt_tokens": 4, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 3}}
    assert usage({"usage": cached})["input_tokens_details"] == {"cached_tokens": 3, "cache_write_tokens": 0}
    assert finished_status({"finish_reason": "length"}) == ("incomplete", {"reason": "max_output_tokens"})
    assert finished_status(answer) == ("completed", None)
    assert as_messages([message, call, {"type": "function_call_output"}]) == [message, call]
