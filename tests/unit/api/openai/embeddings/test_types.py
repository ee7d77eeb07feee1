"""The embeddings request's body (api/openai/embeddings/types.py): texts or token ids,
each wrong one named."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from api.openai.embeddings.types import EmbeddingsRequest

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("given", "inputs"),
    [("x", ["x"]), (["x", "y"], ["x", "y"]), ([1, 2.0], [[1, 2]]), ([[1], [2, 3]], [[1], [2, 3]])],
)
def test_every_form_of_input_is_a_list_of_inputs(given: Any, inputs: Any) -> None:
    assert EmbeddingsRequest.model_validate({"input": given}).inputs() == inputs


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ([1, "x"], "input[1]: a token id is an integer, not str"),
        ([[1], [True]], "input[1][0]: a token id is an integer, not bool"),
        ([[1], 2], "a list of token ids, or a list of such lists, not both"),
        ([2**31], "token id 2147483648 at input[0] is out of range"),
        ("", "at least 1 character"),
        ([], "at least 1 item"),
    ],
)
def test_a_wrong_input_is_refused_saying_what_is_wrong(given: Any, said: str) -> None:
    with pytest.raises(ValidationError, match=said.replace("[", r"\[").replace("]", r"\]")):
        EmbeddingsRequest.model_validate({"input": given})


def test_the_encoding_is_float_or_base64() -> None:
    with pytest.raises(ValidationError):
        EmbeddingsRequest.model_validate({"input": "x", "encoding_format": "int8"})
