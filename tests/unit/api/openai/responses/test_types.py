"""The Responses request's body (api/openai/responses/types.py)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from api.openai.responses.types import ResponsesRequest

pytestmark = pytest.mark.unit


def test_a_response_needs_its_input_or_the_conversation_it_goes_on_with() -> None:
    with pytest.raises(ValidationError, match="input: required, unless previous_response_id"):
        ResponsesRequest.model_validate({"model": "m"})
    assert ResponsesRequest.model_validate({"previous_response_id": "resp_abc"}).input is None


def test_a_background_response_is_stored() -> None:
    with pytest.raises(ValidationError, match="a background response is stored"):
        ResponsesRequest.model_validate({"input": "x", "background": True, "store": False})
    schema = ResponsesRequest.model_json_schema()
    background_unstored = {"required": ["background", "store"],
                           "properties": {"background": {"const": True}, "store": {"const": False}}}  # fmt: skip
    assert background_unstored in schema["not"]["anyOf"]


def test_a_response_goes_on_from_a_conversation_or_a_previous_response_not_both() -> None:
    with pytest.raises(ValidationError, match="conversation, previous_response_id: mutually exclusive"):
        ResponsesRequest.model_validate({"input": "x", "conversation": "conv_abc", "previous_response_id": "resp_abc"})
    assert ResponsesRequest.model_validate({"conversation": {"id": "conv_abc"}}).conversation_id() == "conv_abc"
    assert ResponsesRequest.model_validate({"conversation": "conv_abc"}).conversation_id() == "conv_abc"
    schema = ResponsesRequest.model_json_schema()
    given = {"not": {"type": "null"}}
    both = {"required": ["conversation", "previous_response_id"],
            "properties": {"conversation": given, "previous_response_id": given}}  # fmt: skip
    assert both in schema["not"]["anyOf"]
    assert {"required": ["conversation"], "properties": {"conversation": given}} in schema["anyOf"]


def test_openais_fields_a_chat_server_has_no_use_for_are_accepted() -> None:
    body = ResponsesRequest.model_validate({"input": "x", "reasoning": {"effort": "high"}, "truncation": "auto",
                                            "include": ["file_search_call.results"]})  # fmt: skip
    assert body.reasoning == {"effort": "high"}
    with pytest.raises(ValidationError):
        ResponsesRequest.model_validate({"input": "x", "previous_response_id": "not-a-response-id"})
