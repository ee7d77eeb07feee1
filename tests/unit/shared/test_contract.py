"""The result formats both sides share: an answer stored once, read back whole."""

from __future__ import annotations

from shared.contract import stored_answer, whole_answer

ANSWER = {
    "content": "echo: hi",
    "model": "m",
    "finish_reason": "stop",
    "usage": {"prompt_tokens": 1, "completion_tokens": 2},
    "choices": [{"index": 0, "content": "echo: hi", "finish_reason": "stop"}, {"index": 1, "content": "other"}],
}


def test_an_answer_is_stored_without_what_repeats_its_first_choice_and_read_back_whole() -> None:
    stored = stored_answer(ANSWER)
    assert "content" not in stored and "finish_reason" not in stored
    assert stored["choices"] == ANSWER["choices"]
    assert whole_answer(stored) == ANSWER


def test_what_does_not_repeat_the_first_choice_is_kept_as_it_is() -> None:
    tools = {**ANSWER, "content": "", "choices": [{"index": 0, "content": None, "finish_reason": "tool_calls"}]}
    assert stored_answer(tools)["content"] == ""  # not the choice's None: kept
    assert whole_answer(stored_answer(tools)) == tools
    embedding = {"data": [{"embedding": [0.1]}], "usage": {"prompt_tokens": 1}}
    assert stored_answer(embedding) is embedding and whole_answer(embedding) is embedding
    assert whole_answer(ANSWER) is ANSWER  # stored whole before this change: read as it is
