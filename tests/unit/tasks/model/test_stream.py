"""A streamed answer read piece by piece: choices joined, pieces passed on as they come,
an answer cut short or failing mid-way told from a whole one."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from shared.contract import ModelServerFailed, ModelServerTimeout
from tasks.model.cancel import Cancel, Cancelled
from tasks.model.http import Reply
from tasks.model.protocol import Retryable
from tasks.model.stream import read_events

pytestmark = pytest.mark.unit


def events(*chunks: Any, done: bool = True, after: str = "") -> str:
    body = "".join(f"data: {c if isinstance(c, str) else json.dumps(c)}\n\n" for c in chunks)
    return body + ("data: [DONE]\n\n" if done else "") + after


def reply(body: str, closed: list[bool] | None = None) -> Reply:
    on_close = closed.append if closed is not None else (lambda complete: None)
    return Reply(200, "OK", {"content-type": "text/event-stream"}, io.BytesIO(body.encode()), on_close)


def piece(text: str | None = None, index: int = 0, finish: str | None = None, **delta: Any) -> dict[str, Any]:
    if text is not None:
        delta["content"] = text
    return {"model": "m", "choices": [{"index": index, "delta": delta, "finish_reason": finish}]}


def test_each_choice_is_joined_in_order_and_each_piece_passed_on_as_it_came() -> None:
    usage = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    body = events(
        piece(role="assistant"),
        piece("Hel"),
        piece("B", index=1),
        piece("lo"),
        piece(finish="stop"),
        piece("ye", index=1, finish="length"),
        {"model": "m", "choices": [], "usage": usage},
    )
    seen: list[tuple[int, str, Any]] = []
    completion = read_events(reply(body), None, lambda i, text, extra: seen.append((i, text, extra)))
    assert [(c["index"], c["content"], c["finish_reason"]) for c in completion.choices] == [
        (0, "Hello", "stop"),
        (1, "Bye", "length"),
    ]
    assert seen == [(0, "Hel", None), (1, "B", None), (0, "lo", None), (1, "ye", None)]  # no empty pieces
    assert completion.model == "m" and completion.usage == usage and completion.content == "Hello"
    assert completion.first_piece_at is not None


def test_an_answer_cut_off_before_its_end_is_a_failure_worth_retrying() -> None:
    # A server killed mid-answer closes its connection cleanly between chunks.
    with pytest.raises(Retryable) as cut:
        read_events(reply(events(piece("Hel"), piece("lo"), done=False)), None)
    assert isinstance(cut.value.error, ModelServerFailed) and "ended before it was complete" in str(cut.value.error)
    # Its last choice finished: complete, though the server sent no [DONE].
    finished = read_events(reply(events(piece("Hi"), piece(finish="stop"), done=False)), None)
    assert finished.content == "Hi"


@pytest.mark.parametrize(
    ("chunk", "says"),
    [
        ({"error": {"message": "CUDA out of memory"}}, "failed mid-answer: CUDA out of memory"),
        ({"error": "overloaded"}, "failed mid-answer: overloaded"),
        ("{not json", "not JSON"),
    ],
)
def test_a_failure_in_the_middle_of_an_answer_is_worth_retrying(chunk: Any, says: str) -> None:
    with pytest.raises(Retryable) as failed:
        read_events(reply(events(piece("Hel"), chunk)), None)
    assert says in str(failed.value.error)


def test_the_body_is_read_to_its_end_after_done_so_its_connection_is_kept() -> None:
    closed: list[bool] = []
    answer = reply(events(piece("Hi", finish="stop"), after=": keep-alive\n\n"), closed)
    read_events(answer, None)
    answer.close()
    assert closed == [True]  # read whole: the connection goes back for the next call


def test_llama_cpps_null_opening_and_comment_lines_are_skipped() -> None:
    body = ": ping\n\n" + events("null", {"choices": [{"index": 0, "text": "raw", "finish_reason": "stop"}]})
    assert read_events(reply(body), None).choices == [{"index": 0, "content": "raw", "finish_reason": "stop"}]


def test_an_empty_answer_has_one_empty_choice() -> None:
    assert read_events(reply(events()), None).choices == [{"index": 0, "content": "", "finish_reason": None}]


def test_tool_calls_and_logprobs_are_joined_and_passed_on_piece_by_piece() -> None:
    calls = [
        {"index": 0, "id": "call_a", "type": "function", "function": {"name": "f", "arguments": '{"x"'}},
        {"index": 0, "function": {"arguments": ": 1}"}},
    ]
    logprobs = [{"content": [{"token": "a", "logprob": -0.1}]}, {"content": [{"token": "b", "logprob": -0.2}]}]
    chunks = [
        {"choices": [{"index": 0, "delta": {"tool_calls": [call]}, "logprobs": lp, "finish_reason": None}]}
        for call, lp in zip(calls, logprobs, strict=True)
    ]
    chunks.append(piece(finish="tool_calls"))
    extras: list[Any] = []
    (choice,) = read_events(reply(events(*chunks)), None, lambda i, text, extra: extras.append(extra)).choices
    assert choice["tool_calls"] == [
        {"id": "call_a", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}
    ]
    assert choice["logprobs"] == {"content": [{"token": "a", "logprob": -0.1}, {"token": "b", "logprob": -0.2}]}
    assert extras == [
        {"tool_calls": [calls[0]], "logprobs": logprobs[0]},
        {"tool_calls": [calls[1]], "logprobs": logprobs[1]},
    ]


def test_a_cancel_or_the_deadline_stops_the_read_between_pieces() -> None:
    cancel = Cancel()
    seen: list[str] = []

    def on_delta(index: int, text: str, extra: Any) -> None:
        seen.append(text)
        cancel.set()

    with pytest.raises(Cancelled):
        read_events(reply(events(piece("a"), piece("b"), piece(finish="stop"))), cancel, on_delta)
    assert seen == ["a"]
    with pytest.raises(ModelServerTimeout, match="LLM_DEADLINE"):
        read_events(reply(events(piece("a"))), None, past_deadline=lambda: True)


@pytest.mark.parametrize("name", ["reasoning_content", "reasoning"])
def test_reasoning_is_joined_apart_from_the_text_and_passed_on_as_it_came(name: str) -> None:
    # llama.cpp and vLLM until 0.10 name it reasoning_content; vLLM since, reasoning.
    body = events(
        piece(**{name: "Think"}),
        piece(**{name: "ing."}),
        piece("Done"),
        {"model": "m", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop", "stop_reason": "END"}]},
    )
    seen: list[tuple[int, str, Any]] = []
    completion = read_events(reply(body), None, lambda i, text, extra: seen.append((i, text, extra)))
    (choice,) = completion.choices
    assert choice["content"] == "Done" and choice["reasoning_content"] == "Thinking."
    assert choice["stop_reason"] == "END"  # vLLM's: the stop string that ended it
    assert seen == [(0, "", {"reasoning_content": "Think"}), (0, "", {"reasoning_content": "ing."}), (0, "Done", None)]


def test_an_answer_without_reasoning_or_stop_string_says_neither() -> None:
    completion = read_events(reply(events(piece("x"), piece(finish="stop"))), None)
    assert set(completion.choices[0]) == {"index", "content", "finish_reason"}
