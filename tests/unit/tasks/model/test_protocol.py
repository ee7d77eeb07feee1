"""What a model server is asked and answers: priorities, errors, whole answers, embeddings."""

from __future__ import annotations

import io
from typing import Any

import pytest

from shared.contract import ModelServerFailed
from tasks.model.http import Reply
from tasks.model.protocol import (
    CONTEXT_ERROR,
    Completion,
    Retryable,
    Turn,
    error_message,
    fitted_max_tokens,
    json_or_retry,
    parse_completion,
    parse_embeddings,
    retry_after,
    server_priority,
)

pytestmark = pytest.mark.unit


def test_a_jobs_priority_maps_to_vllms_where_lower_is_sooner() -> None:
    assert [server_priority(p) for p in (9, 5, 0)] == [0, 4, 9]
    assert server_priority(None) == server_priority(5)  # a job without one: the API's default


def reply(status: int, body: bytes | str, **headers: str) -> Reply:
    data = body.encode() if isinstance(body, str) else body
    return Reply(status, "Reason Given", headers, io.BytesIO(data))


@pytest.mark.parametrize(
    ("message", "room"),
    [
        (
            "This model's maximum context length is 2048 tokens. However, you requested 8200 tokens"
            " (104 in the messages, 8096 in the completion).",
            1944,
        ),
        ("maximum context length is 4096 tokens and your request has 1000 input tokens", 3096),
        ("`inputs` tokens + `max_new_tokens` must be <= 2048. Given: 2000 `inputs` tokens", 48),
        ("maximum context length is 512 tokens and your request has 600 input tokens", None),  # no room left
        ("max_tokens is too large", None),  # says nothing of the numbers
    ],
)
def test_a_context_overflow_tells_the_largest_max_tokens_that_fits(message: str, room: int | None) -> None:
    assert CONTEXT_ERROR.search(message)
    assert fitted_max_tokens(message) == room


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ('{"error": {"message": "bad top_p", "type": "invalid_request_error"}}', "bad top_p"),  # OpenAI, vLLM
        ('{"error": "Input validation error"}', "Input validation error"),  # TGI
        ('{"detail": "Not Found"}', "Not Found"),  # FastAPI's
        ('{"error": {"detail": "no such model"}}', "no such model"),
        ("upstream connect error\n", "upstream connect error"),  # a proxy's plain text
        ("", "Reason Given"),
        ("[1, 2]", "[1, 2]"),
    ],
)
def test_the_error_text_of_each_servers_answer_is_found(body: str, said: str) -> None:
    assert error_message(reply(400, body)) == said


def test_retry_after_is_seconds_never_negative_and_ignored_when_a_date() -> None:
    assert retry_after(reply(429, "", **{"Retry-After": "2.5"})) == 2.5
    assert retry_after(reply(429, "", **{"retry-after": "-3"})) == 0.0
    assert retry_after(reply(503, "", **{"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"})) is None
    assert retry_after(reply(503, "")) is None


def test_an_answer_that_is_not_json_is_worth_retrying() -> None:
    with pytest.raises(Retryable) as raised:
        json_or_retry(reply(200, "<html>gateway</html>"))
    assert isinstance(raised.value.error, ModelServerFailed)


def test_a_whole_answer_of_a_server_that_ignored_stream_is_read_as_chat_or_raw() -> None:
    call = [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    chat = parse_completion(
        {
            "model": "m",
            "usage": {"total_tokens": 3},
            "choices": [
                {"message": {"content": None, "tool_calls": call}, "finish_reason": "tool_calls"},
                {"index": 1, "message": {"content": "two"}, "finish_reason": "stop", "logprobs": None},
            ],
        }
    )
    assert chat.choices == [
        {"index": 0, "content": "", "finish_reason": "tool_calls", "tool_calls": call},
        {"index": 1, "content": "two", "finish_reason": "stop"},  # no logprobs: none kept
    ]
    assert (chat.model, chat.usage) == ("m", {"total_tokens": 3})
    raw = parse_completion({"choices": [{"text": " 4", "index": 0, "finish_reason": "length"}]})
    assert raw.content == " 4" and raw.model is None


@pytest.mark.parametrize("data", [{}, {"choices": []}, {"choices": [{"finish_reason": "stop"}]}, [], None])
def test_an_answer_without_choices_is_the_servers_failure(data: Any) -> None:
    with pytest.raises(ModelServerFailed, match="without choices"):
        parse_completion(data)


def test_embeddings_come_back_in_the_inputs_order_one_per_input() -> None:
    data = {
        "model": "e",
        "usage": {"prompt_tokens": 5},
        "data": [{"index": 1, "embedding": [3, 4]}, {"index": 0, "embedding": [1.5, 2]}],
    }
    embedded = parse_embeddings(data, 2)
    assert embedded.vectors == [[1.5, 2.0], [3.0, 4.0]]
    assert (embedded.model, embedded.usage) == ("e", {"prompt_tokens": 5})
    with pytest.raises(ModelServerFailed, match="sent 2 embeddings for 3 inputs"):
        parse_embeddings(data, 3)
    with pytest.raises(ModelServerFailed, match=r"without data\[\].embedding"):
        parse_embeddings({"data": [{"index": 0}]}, 1)


def test_a_call_of_several_jobs_takes_the_most_urgent_priority_and_the_oldest_time() -> None:
    first = Turn(priority=None, accepted_at=20.0, tenant="acme", weight=2.0)
    joined = first.with_job(Turn(priority=3, accepted_at=10.0)).with_job(Turn(priority=7, accepted_at=None))
    assert joined == Turn(priority=7, accepted_at=10.0, tenant="acme", weight=2.0)
    assert Turn().with_job(Turn()) == Turn()


def test_a_completion_as_a_task_returns_it_names_the_model_that_served_it() -> None:
    completion = Completion([{"index": 0, "content": "hi", "finish_reason": "stop"}], "m", None)
    assert completion.as_dict() == {
        "content": "hi",
        "model": "m",
        "finish_reason": "stop",
        "usage": None,
        "choices": completion.choices,
    }
    completion.served_by = ("fallback", "gpu-b:8000")
    assert completion.as_dict()["served_model"] == "fallback"
    assert completion.as_dict()["server"] == "gpu-b:8000"  # shown to admins only (GET /jobs/{id})
    assert Completion([], None, None).as_dict()["content"] == ""


def test_a_whole_answers_reasoning_and_stop_string_are_kept() -> None:
    data = {"choices": [{"index": 0, "finish_reason": "stop", "stop_reason": "###",
                         "message": {"content": "42", "reasoning": "six times seven"}}]}  # fmt: skip
    (choice,) = parse_completion(data).choices
    assert choice["reasoning_content"] == "six times seven" and choice["stop_reason"] == "###"
    # A stop token's id (vLLM's int) is no stop string.
    data["choices"][0].update(stop_reason=151645, message={"content": "42", "reasoning_content": ""})
    assert set(parse_completion(data).choices[0]) == {"index", "content", "finish_reason"}
