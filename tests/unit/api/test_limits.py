"""The request bodies of one deployment (api/limits.py): its limits written into their
schema, so a client reading it knows what will be refused, and defaults within them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from api.limits import request_models
from tests.unit.api.edge import config

pytestmark = pytest.mark.unit

SETTINGS = config(max_prompt_chars=100, max_messages=3, max_stop_words=2, max_stop_word_chars=5, max_tokens_limit=50,
                  max_choices=4, max_embedding_inputs=8)  # fmt: skip


def test_the_schemas_carry_the_deployments_limits() -> None:
    models = request_models(SETTINGS)
    generate = models.generate.model_json_schema()
    meta = generate["$defs"]["Meta"]["properties"]
    assert generate["properties"]["content"]["maxLength"] == 100
    stop_words, tokens_limit = meta["stop_words"]["anyOf"][0], meta["tokens_limit"]["anyOf"][0]  # or null
    assert stop_words["maxItems"] == 2 and stop_words["items"]["maxLength"] == 5
    assert tokens_limit["maximum"] == 50
    assert models.chat.model_json_schema()["properties"]["messages"]["maxItems"] == 3
    chat = models.openai_chat.model_json_schema()["properties"]
    assert chat["max_tokens"]["maximum"] == 50 and chat["messages"]["maxItems"] == 3
    responses = models.responses.model_json_schema()["properties"]
    assert responses["max_output_tokens"]["maximum"] == 50 and responses["input"]["maxItems"] == 3
    # The bodies keep their documentation.
    assert models.generate.__doc__ == "Body of ``POST /generate``." and "description" in meta["temperature"]


def test_a_default_above_the_deployments_limit_is_brought_within_it() -> None:
    models = request_models(SETTINGS)
    assert models.generate(content="x").meta.tokens_limit == 50
    assert request_models(config()).generate(content="x").meta.tokens_limit == 8096  # the spec's


def test_the_limits_that_bound_a_field_are_enforced_by_the_body_itself() -> None:
    models = request_models(SETTINGS)
    assert models.openai_chat(messages=[{"role": "user", "content": "x"}], n=4).n == 4
    with pytest.raises(ValidationError):
        models.openai_chat(messages=[{"role": "user", "content": "x"}], n=5)  # MAX_CHOICES
    with pytest.raises(ValidationError):
        models.openai_completion(prompt="x", best_of=5)
    with pytest.raises(ValidationError):
        models.embeddings(input=["x"] * 9)  # MAX_EMBEDDING_INPUTS
    with pytest.raises(ValidationError):
        models.embeddings(input="x" * 101)  # MAX_PROMPT_CHARS
    with pytest.raises(ValidationError):
        models.chat(messages=[])
