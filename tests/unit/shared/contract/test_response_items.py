"""A response's output items made from its job's answer (shared/contract/response_items.py):
the same items, with the same ids, for the API's response object and the worker's turn
added to a conversation."""

from __future__ import annotations

import pytest

from shared.contract.response_items import call_item, item_id, message_item, output_items, output_text

pytestmark = pytest.mark.unit


def call(call_id: str | None, name: str, arguments: str | None) -> dict[str, object]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def test_an_answers_text_is_one_message_of_one_output_text_part() -> None:
    answer = {"choices": [{"index": 0, "content": "hello", "finish_reason": "stop"}], "content": "hello"}
    assert output_items("resp_abc", answer) == [
        {"id": "msg_abc_0", "type": "message", "status": "completed", "role": "assistant",
         "content": [{"type": "output_text", "text": "hello", "annotations": [], "logprobs": []}]},
    ]  # fmt: skip


def test_the_items_are_choice_zeros_only() -> None:
    answer = {"choices": [{"index": 0, "content": "first"}, {"index": 1, "content": "second"}]}
    (message,) = output_items("resp_abc", answer)
    assert message["content"][0]["text"] == "first"


def test_an_answer_without_choices_is_read_from_its_content() -> None:
    # A result of the native shape (no choices): its content is the text.
    (message,) = output_items("resp_abc", {"content": "plain"}, status="incomplete")
    assert message["content"][0]["text"] == "plain" and message["status"] == "incomplete"


def test_tool_calls_follow_the_text_each_an_item_with_the_servers_call_id() -> None:
    answer = {"choices": [{"index": 0, "content": "let me look",
                           "tool_calls": [call("call_9", "find", '{"q":1}'), call(None, "add", None)]}]}  # fmt: skip
    message, first, second = output_items("resp_abc", answer)
    assert message["id"] == "msg_abc_0" and message["content"][0]["text"] == "let me look"
    assert first == {"id": "fc_abc_0", "type": "function_call", "status": "completed", "call_id": "call_9",
                     "name": "find", "arguments": '{"q":1}'}  # fmt: skip
    # A call the server gave no id: an id of the response's, the same on every read.
    assert second["call_id"] == "call_abc_1" and second["arguments"] == "" and second["id"] == "fc_abc_1"


def test_calls_alone_make_no_empty_message_but_nothing_at_all_makes_an_empty_one() -> None:
    only_calls = {"choices": [{"index": 0, "content": None, "tool_calls": [call("c1", "f", "{}")]}]}
    assert [item["type"] for item in output_items("resp_abc", only_calls)] == ["function_call"]
    (empty,) = output_items("resp_abc", {"choices": [{"index": 0, "content": ""}]})
    assert empty["type"] == "message" and empty["content"] == [output_text("")]


def test_ids_are_the_responses_own_and_stable() -> None:
    assert item_id("resp_xyz", "msg", 0) == "msg_xyz_0" == item_id("resp_xyz", "msg", 0)
    assert item_id("xyz", "fc", 2) == "fc_xyz_2"  # an id without resp_ is used whole
    assert output_items("resp_xyz", {"content": "a"}) == output_items("resp_xyz", {"content": "a"})


def test_a_message_being_made_has_no_part_yet() -> None:
    assert message_item("msg_1", None, "in_progress")["content"] == []
    assert call_item("fc_1", "c", "f", "", "in_progress")["status"] == "in_progress"
