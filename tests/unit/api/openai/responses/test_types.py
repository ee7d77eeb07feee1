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
    assert schema["not"]["properties"] == {"background": {"const": True}, "store": {"const": False}}


def test_openais_fields_a_chat_server_has_no_use_for_are_accepted() -> None:
    body = ResponsesRequest.model_validate({"input": "x", "reasoning": {"effort": "high"}, "truncation": "auto",
                                            "include": ["file_search_call.results"]})  # fmt: skip
    assert body.reasoning == {"effort": "high"}
    with pytest.raises(ValidationError):
        ResponsesRequest.model_validate({"input": "x", "previous_response_id": "not-a-response-id"})
