"""What OpenAI's request bodies share (api/openai/types.py): fields passed on to the model
server, bounded in number; fallbacks; the sampling as the job's meta."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from api.openai.types import MAX_EXTRA_FIELDS, _Sampling

pytestmark = pytest.mark.unit


def test_the_sampling_is_the_jobs_meta_with_only_what_was_given() -> None:
    body = _Sampling.model_validate({"temperature": 0.5, "stop": "x", "top_p": 0.9, "seed": 3.0, "n": 1})
    assert body.meta(7) == {"temperature": 0.5, "tokens_limit": 7, "stop_words": ["x"], "model": None,
                            "priority": 5, "sampling": {"top_p": 0.9, "seed": 3}}  # fmt: skip
    assert _Sampling.model_validate({"n": 3}).meta(None)["sampling"] == {"n": 3}


def test_fields_the_gateway_does_not_know_are_passed_on_up_to_a_bound() -> None:
    body = _Sampling.model_validate({"top_k": 5, "guided_json": {"type": "object"}})
    assert body.passed_on(frozenset({"user"})) == {"top_k": 5, "guided_json": {"type": "object"}}
    assert _Sampling.model_validate({"user": "u"}).passed_on(frozenset({"user"})) == {"user": "u"}
    with pytest.raises(ValidationError, match=f"at most {MAX_EXTRA_FIELDS} fields"):
        _Sampling.model_validate({f"x{n}": n for n in range(MAX_EXTRA_FIELDS + 1)})


def test_fallbacks_are_the_models_named_none_asked_or_the_models_own() -> None:
    assert _Sampling().fallbacks_asked() is None and _Sampling().with_fallbacks({"a": 1}) == {"a": 1}
    assert _Sampling(fallbacks=["b"]).with_fallbacks({}) == {"fallbacks": ["b"]}
    assert _Sampling(fallbacks=["b"], disable_fallbacks=True).fallbacks_asked() == []
    with pytest.raises(ValidationError):
        _Sampling(fallbacks=["bad name!"])
