"""The text completion's body (api/openai/completions/types.py)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from api.openai.completions.types import OpenAICompletionRequest

pytestmark = pytest.mark.unit


def test_a_prompt_is_text_or_a_list_of_texts_not_token_ids() -> None:
    assert OpenAICompletionRequest(prompt="x").prompt == "x"
    assert OpenAICompletionRequest(prompt=["x", "y"]).prompt == ["x", "y"]
    for ids in ([1, 2, 3], [[1, 2], [3]]):
        with pytest.raises(ValidationError, match="send its text"):
            OpenAICompletionRequest.model_validate({"prompt": ids})


@pytest.mark.parametrize("field", [{"logprobs": 21}, {"best_of": 0}, {"best_of": 17}, {"echo": "yes"}])
def test_the_completion_fields_are_bounded(field: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        OpenAICompletionRequest.model_validate({"prompt": "x", **field})
