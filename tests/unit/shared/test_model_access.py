"""A project's model permissions (shared/model_access.py): a model stands for all its
names; the registry a project sees holds only the models it may use, so a forbidden
model fails exactly as an unknown one; with INNER_LLM_URL alone, names are compared as
requests give them."""

from __future__ import annotations

import json

import pytest

from shared.config import Config
from shared.model_access import ModelAccess, permitted, serves
from shared.registry import Registry, UnknownModel, UnknownQueue, load_registry

pytestmark = pytest.mark.unit

MODELS = {
    "models": [
        {"name": "small", "aliases": ["qwen-1.5b"], "url": "http://gpu-a:8000"},
        {"name": "large", "url": "http://gpu-b:8000", "queue": "llm-large", "fallbacks": ["small"]},
        {"name": "embed", "url": "http://gpu-c:8000"},
    ],
    "default": "small",
}


def registry(**settings: str) -> Registry:
    return load_registry(Config(_env_file=None, queue_name="q", **settings))  # type: ignore[call-arg]


def allow(*names: str) -> ModelAccess:
    return ModelAccess("allow_list", frozenset(names))


def deny(*names: str) -> ModelAccess:
    return ModelAccess("deny_list", frozenset(names))


def refusal(seen: Registry, name: str | None) -> str:
    with pytest.raises(UnknownModel) as refused:
        seen.route(name)
    return str(refused.value)


def test_a_model_is_allowed_or_denied_by_any_of_its_names() -> None:
    assert allow("qwen-1.5b").allows(("small", "qwen-1.5b")) and not allow("large").allows(("small", "qwen-1.5b"))
    assert not deny("small").allows(("small", "qwen-1.5b")) and deny("large").allows(("small", "qwen-1.5b"))
    assert not allow().allows(("small",)) and deny().allows(("small",))


def test_a_project_without_permissions_sees_the_registry_itself() -> None:
    whole = registry(models=json.dumps(MODELS))
    assert permitted(whole, None) is whole


def test_a_forbidden_model_is_refused_exactly_as_one_the_registry_does_not_list() -> None:
    seen = permitted(registry(models=json.dumps(MODELS)), deny("qwen-1.5b"))
    assert [model.name for model in seen.models] == ["large", "embed"]
    assert seen.names() == ["large", "embed"]
    forbidden, alias, unknown = refusal(seen, "small"), refusal(seen, "qwen-1.5b"), refusal(seen, "made-up")
    assert forbidden == "model 'small' is not served here; the models are: large, embed"
    assert forbidden.replace("'small'", "'made-up'") == unknown == alias.replace("'qwen-1.5b'", "'made-up'")
    assert seen.route("large").name == "large" and serves(seen, "embed") and not serves(seen, "small")


def test_an_allow_list_by_alias_allows_the_model_by_every_name() -> None:
    seen = permitted(registry(models=json.dumps(MODELS)), allow("qwen-1.5b"))
    assert seen.route("small").name == seen.route("qwen-1.5b").name == "small"
    assert seen.names() == ["small", "qwen-1.5b"]
    assert refusal(seen, "large") == "model 'large' is not served here; the models are: small, qwen-1.5b"


def test_a_request_naming_no_model_is_refused_as_naming_the_default_when_it_is_forbidden() -> None:
    seen = permitted(registry(models=json.dumps(MODELS)), allow("large"))
    assert refusal(seen, None) == refusal(seen, "small") == "model 'small' is not served here; the models are: large"
    assert permitted(registry(models=json.dumps(MODELS)), allow("small")).route(None).name == "small"


def test_the_queue_of_a_forbidden_model_is_a_queue_not_served() -> None:
    seen = permitted(registry(models=json.dumps(MODELS)), deny("large"))
    with pytest.raises(UnknownQueue) as refused:
        seen.by_queue("llm-large", "q")
    assert "llm-large" not in refused.value.known and seen.by_queue("q.embed", "q").name == "embed"


def test_without_a_registry_the_names_requests_give_are_compared_as_given() -> None:
    one = registry()
    seen = permitted(one, deny("llama"))
    assert seen.route("qwen") is one.default and seen.route(None) is one.default
    assert refusal(seen, "llama") == "model 'llama' is not served here; the models are: default"
    only = permitted(one, allow("qwen"))
    assert only.route("qwen") is one.default and not serves(only, "llama") and not serves(only, "default")
    assert refusal(only, None) == "model 'default' is not served here; the models are: "
