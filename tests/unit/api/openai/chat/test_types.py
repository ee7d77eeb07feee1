"""The chat request's body (api/openai/chat/types.py): OpenAI's messages, content parts,
tools and formats as its clients send them, passed on as given."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from api.openai.chat.types import OpenAIChatRequest

pytestmark = pytest.mark.unit


def test_messages_go_to_the_model_server_as_given_their_unknown_fields_too() -> None:
    body = OpenAIChatRequest.model_validate({"messages": [
        {"role": "developer", "content": [{"type": "text", "text": "be brief"}, {"type": "image_url",
                                            "image_url": {"url": "data:x"}}]},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "function",
                                                               "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c", "content": "42", "vendor_field": 1},
    ]})  # fmt: skip
    developer, assistant, tool = (message.wire() for message in body.messages)
    assert developer["content"] == [{"type": "text", "text": "be brief"},
                                    {"type": "image_url", "image_url": {"url": "data:x"}}]  # fmt: skip
    assert assistant["content"] is None and assistant["tool_calls"][0]["function"]["name"] == "f"
    assert tool == {"role": "tool", "tool_call_id": "c", "content": "42", "vendor_field": 1}


@pytest.mark.parametrize(
    "fields",
    [
        {"messages": []},
        {"messages": [{"role": "wizard", "content": "x"}]},
        {"messages": [{"role": "user", "content": [{"type": "text"}]}]},  # a text part without its text
        {"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]},
        {"messages": [{"role": "user", "content": "x"}], "top_logprobs": 21},
        {"messages": [{"role": "user", "content": "x"}], "temperature": "hot"},
        {"messages": [{"role": "user", "content": "x"}], **{f"extra_{n}": n for n in range(65)}},
    ],
)
def test_a_body_openai_would_refuse_is_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        OpenAIChatRequest.model_validate(fields)


def test_what_openais_sdk_sends_for_nothing_is_taken_as_the_default() -> None:
    body = OpenAIChatRequest.model_validate({"messages": [{"role": "user", "content": "x"}], "n": None,
                                             "stop": None, "tool_choice": None, "max_tokens": 8.0})  # fmt: skip
    assert body.n == 1 and body.stop is None and body.max_tokens == 8
