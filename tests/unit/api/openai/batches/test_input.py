"""A batch's input file read line by line (api/openai/batches/input.py): each line a job
below interactive traffic, and a file with bad lines refused whole, each named."""

from __future__ import annotations

import json
from typing import Any

import pytest

from api.limits import request_models
from api.openai.batches.input import MAX_REPORTED, read_input
from shared.contract import TaskName
from shared.registry import load_registry
from tests.unit.api.edge import config

pytestmark = pytest.mark.unit

SETTINGS = config(models=json.dumps({"models": [{"name": "small", "url": "http://a:1"}]}), max_tokens_limit=100)
USER = [{"role": "user", "content": "hi"}]


def line(custom_id: str = "a", url: str = "/v1/chat/completions", **body: Any) -> bytes:
    given = {"messages": USER, **body} if url == "/v1/chat/completions" else body
    request = {"custom_id": custom_id, "method": "POST", "url": url, "body": given}
    return json.dumps(request).encode() + b"\n"


def read(*lines: bytes, **settings: Any) -> Any:
    settings_ = config(**{**SETTINGS.model_dump(include={"models", "max_tokens_limit"}), **settings})
    return read_input(lines, settings_, load_registry(settings_), request_models(settings_))


def test_each_line_is_a_job_of_its_endpoint_at_the_lowest_priority() -> None:
    got = read(line("chat", model="small"), b"\n", line("emb", "/v1/embeddings", input="x"),
               line("resp", "/v1/responses", input="x", instructions="be brief"))  # fmt: skip
    assert not got.problems
    chat, embedding, response = got.lines
    assert (chat.index, chat.number, chat.task, chat.model) == (0, 1, TaskName.CHAT, "small")
    assert chat.job["meta"]["priority"] == 0 and chat.job["openai"]["messages"] == USER
    assert (embedding.number, embedding.task, embedding.asked) == (3, TaskName.EMBED, {"encoding_format": "float"})
    assert response.job["response"] is True and response.asked == {"instructions": "be brief",
                                                                   "store": True, "background": False}  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "said"),
    [
        (b"{not json\n", "not JSON"),
        (b'[1, 2]\n', "not a JSON object"),
        (b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"t": NaN}}\n',
         "body.t: NaN is not a finite number"),
        (line(""), "custom_id: a non-empty string is required"),
        (line("x" * 513), "custom_id: at most 512 characters"),
        (line(url="/v1/images"), "url: must be one of"),
        (line(model="huge"), "body.model: "),
        (line(stream=True), "body.stream: a batch's requests are not streamed"),
        (line(max_tokens=101), "MAX_TOKENS_LIMIT"),
        (line(messages=[]), "body.messages: "),
        (line("r", "/v1/responses", input="x", background=True), "body.background"),
        (line("e", "/v1/embeddings", input="x", fallbacks=["small"]), "body.fallbacks: an embedding is its model's"),
    ],
)  # fmt: skip
def test_a_bad_line_is_named_with_what_is_wrong(raw: bytes, said: str) -> None:
    got = read(line("first"), raw)
    assert not got.lines[1:] and got.problems[0][0] == 2 and said in got.problems[0][1], got.problems


def test_a_custom_id_used_twice_and_a_file_too_long_or_empty_are_refused() -> None:
    assert "used by an earlier line" in read(line("a"), line("a")).problems[0][1]
    assert read(line("a"), line("b"), line("c"), batch_max_lines=2).refusal(2) == (
        "the file holds more than 2 requests (BATCH_MAX_LINES)")  # fmt: skip
    assert read(b"\n").problems == [(1, "the file holds no request")]
    many = read(*(b"oops\n" for _ in range(MAX_REPORTED + 5)))
    assert many.refusal(1000).endswith("; and 5 more line(s)")
