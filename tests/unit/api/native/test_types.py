"""The spec's bodies (api/native/types.py): strict about types and limits, lenient about
what ProtoLLM's clients add (nulls for optional fields, a priority beside meta)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from api.native.types import ChatCompletionRequest, GenerateRequest, Meta, integral

pytestmark = pytest.mark.unit


def test_a_null_for_an_optional_field_is_its_default_as_protollms_clients_send() -> None:
    body = GenerateRequest.model_validate(
        {"job_id": None, "content": "hi", "stream": None, "priority": None, "source": None,
         "meta": {"stop_words": None, "model": None, "temperature": None, "priority": None}}
    )  # fmt: skip
    assert body.meta == Meta() and body.stream is False and body.priority is None
    assert len(body.job_id) == 32  # one of its own, unique
    assert GenerateRequest(content="x").job_id != GenerateRequest(content="x").job_id


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"content": None}, "content"),  # a null for a required field is still missing
        ({"content": "x", "stream": 0}, "stream"),  # the wrong type is refused, not converted
        ({"content": 5}, "content"),
        ({"content": "x", "job_id": "a b/c"}, "job_id"),
        ({"content": "x", "job_id": "j" * 129}, "job_id"),
        ({"content": "x", "meta": {"temperature": 2.5}}, "temperature"),
        ({"content": "x", "meta": {"tokens_limit": 0}}, "tokens_limit"),
        ({"content": "x", "meta": {"priority": 10}}, "priority"),
        ({"content": "x", "meta": {"model": "bad model!"}}, "model"),
        ({"content": "x", "priority": 1.5}, "priority"),
        ({"content": "x", "source": "s" * 257}, "source"),
    ],
)
def test_a_body_outside_the_spec_is_refused_naming_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as refused:
        GenerateRequest.model_validate(body)
    assert field in str(refused.value.errors()[0]["loc"])


def test_a_whole_number_written_with_a_point_is_an_integer() -> None:
    assert integral(8.0) == 8 and isinstance(integral(8.0), int)
    assert integral(8.5) == 8.5 and integral("8") == "8"
    meta = Meta.model_validate({"tokens_limit": 100.0, "priority": 7.0})
    assert (meta.tokens_limit, meta.priority) == (100, 7)


def test_a_chat_needs_a_message_of_a_known_role() -> None:
    with pytest.raises(ValidationError):
        ChatCompletionRequest.model_validate({"messages": []})
    with pytest.raises(ValidationError, match="role"):
        ChatCompletionRequest.model_validate({"messages": [{"role": "wizard", "content": "x"}]})
    chat = ChatCompletionRequest.model_validate({"messages": [{"role": "tool", "content": "42"}]})
    assert chat.messages[0].role == "tool"


def test_the_schema_says_an_optional_field_takes_null() -> None:
    properties = GenerateRequest.model_json_schema()["properties"]
    assert {"type": "null"} in properties["stream"]["anyOf"] and {"type": "null"} in properties["priority"]["anyOf"]
    assert "anyOf" not in properties["content"]  # required: no null
