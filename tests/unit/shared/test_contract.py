"""The result formats both sides share: an answer stored once, read back whole."""

from __future__ import annotations

from shared.contract import kept_answer, kept_claim, stored_answer, whole_answer

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


def test_a_kept_answer_leaves_its_runs_timing_to_the_requests_that_awaited_it() -> None:
    ran = {**ANSWER, "timing": {"run_seconds": 0.2, "queued_seconds": 0.1}}
    kept = kept_answer(ran)
    assert "timing" not in kept and "content" not in kept  # the text once, in its choice
    assert whole_answer(kept) == ANSWER
    assert "timing" in ran  # the task's own answer is left as it is (it is published)
    embedding = {"embeddings": ["AACAPw=="], "usage": {"prompt_tokens": 1}}
    assert kept_answer(embedding) is embedding


def test_the_claim_a_result_keeps_is_read_back_as_its_hash_had_it() -> None:
    meta = {"claim": {"fingerprint": "ab", "accepted_at": "1.5", "tenant": "t"}, "status": "SUCCESS"}
    assert kept_claim(meta) == {"fingerprint": "ab", "accepted_at": "1.5", "tenant": "t"}
    # A result stored before (or of a job without the API's claim) keeps none.
    assert kept_claim({"status": "SUCCESS"}) == {} and kept_claim(None) == {}
    assert kept_claim({"claim": "?"}) == {} and kept_claim({"claim": {"started_at": 1.5}}) == {}
