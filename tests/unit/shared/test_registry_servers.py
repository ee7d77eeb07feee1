"""A model's servers in the registry: the forms it takes, what it refuses, and INNER_LLM_URL's list."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.config import Config
from shared.registry import DEFAULT_SLOTS, RegistryError, load_registry
from shared.servers import servers_state

pytestmark = pytest.mark.unit


def registry(*models: dict[str, Any], **settings: Any) -> Any:
    return load_registry(Config(_env_file=None, models=json.dumps({"models": list(models)}), **settings))  # type: ignore[call-arg]


def test_a_model_lists_its_servers_with_slots_keys_and_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPU_C_KEY", "c-secret")
    model = registry(
        {
            "name": "large",
            "api_key": "model-key",
            "servers": [
                {"url": "gpu-b:8000/v1", "slots": 16, "labels": {"gpu": "h100"}},
                {"url": "https://user:pw@gpu-c", "slots": 4, "api_key_env": "GPU_C_KEY", "name": "c"},
                "gpu-d:8000",
            ],
            "fallbacks": ["small"],
        },
        {"name": "small", "url": "gpu-a:8000"},
    ).by_name("large")
    b, c, d = model.servers
    assert (b.name, b.url, b.slots, b.labels) == ("gpu-b:8000", "http://gpu-b:8000", 16, (("gpu", "h100"),))
    assert b.api_key is not None and b.api_key.get_secret_value() == "model-key"  # the model's key by default
    assert c.name == "c" and c.api_key is not None and c.api_key.get_secret_value() == "c-secret"
    assert (d.name, d.slots) == ("gpu-d:8000", DEFAULT_SLOTS)
    assert model.url == "http://gpu-b:8000" and model.pooled and model.fallbacks == ("small",)
    assert "pw" not in repr(model)


def test_a_server_named_from_its_url_never_shows_its_password() -> None:
    (server,) = registry({"name": "m", "url": "http://user:pw@gpu-a:8000"}).default.servers
    assert server.name == "gpu-a:8000"


def test_one_url_and_no_fallbacks_is_no_pool() -> None:
    model = registry({"name": "m", "url": "gpu-a:8000"}).default
    assert len(model.servers) == 1 and not model.pooled


@pytest.mark.parametrize(
    ("entry", "error"),
    [
        ({"name": "m", "servers": []}, "needs 'name' and 'url'"),
        ({"name": "m", "servers": [{"slots": 2}]}, r"servers\[0\] needs 'url'"),
        ({"name": "m", "servers": [{"url": "a:1", "slots": 0}]}, "'slots' needs a whole number"),
        ({"name": "m", "servers": [{"url": "a:1", "slots": True}]}, "'slots' needs a whole number"),
        ({"name": "m", "servers": [{"url": "a:1"}, {"url": "a:1"}]}, "two servers with one name"),
        ({"name": "m", "servers": [{"url": "a:1", "name": "x,y"}]}, "may hold only"),
        ({"name": "m", "url": "a:1", "fallbacks": ["nope"]}, "fallback 'nope' is not another model"),
        ({"name": "m", "url": "a:1", "fallbacks": ["m"]}, "fallback 'm' is not another model"),
        ({"name": "m", "url": "a:1", "fallback_after": -1}, "'fallback_after' needs seconds"),
        ({"name": "m", "url": "a:1", "queue_fallback_after": "soon"}, "'queue_fallback_after' needs seconds"),
    ],
)
def test_a_registry_that_cannot_work_is_refused_naming_what(entry: dict[str, Any], error: str) -> None:
    with pytest.raises(RegistryError, match=error):
        registry(entry)


def test_inner_llm_url_may_name_several_servers_of_the_one_model() -> None:
    config = Config(_env_file=None, inner_llm_url="gpu-a:8000, http://gpu-b:8000/v1", inner_llm_slots=8)  # type: ignore[call-arg]
    assert config.inner_llm_urls == ["http://gpu-a:8000", "http://gpu-b:8000"]
    model = load_registry(config).default
    assert [(s.name, s.slots) for s in model.servers] == [("gpu-a:8000", 8), ("gpu-b:8000", 8)]
    assert model.pooled
    with pytest.raises(RegistryError, match="twice"):
        load_registry(Config(_env_file=None, inner_llm_url="a:1,a:1"))  # type: ignore[call-arg]


def test_inner_llm_url_shown_without_credentials_each() -> None:
    config = Config(_env_file=None, inner_llm_url="http://u:p@a:1,b:2")  # type: ignore[call-arg]
    assert config.inner_llm_url_shown == "http://a:1,http://b:2"


def test_a_servers_state_as_scaling_shows_it() -> None:
    model = registry({"name": "m", "servers": [{"url": "a:1", "slots": 4}, {"url": "b:1", "slots": 2},
                                               {"url": "c:1"}]}).default  # fmt: skip
    raw = {
        b"a:1|slots": b"4", b"a:1|free": b"1", b"a:1|state": b"up", b"a:1|jobs": b"10",
        b"b:1|slots": b"2", b"b:1|free": b"1", b"b:1|state": b"down", b"b:1|fails": b"3", b"b:1|failures": b"5",
        b"b:1|why": b"refused",
    }  # fmt: skip
    a, b, c = servers_state(model, raw)
    assert (a["state"], a["busy"], a["jobs"]) == ("healthy", 3, 10)
    assert (b["state"], b["busy"], b["failures_in_a_row"], b["last_failure"]) == ("draining", 1, 3, "refused")
    assert (c["state"], c["slots"], c["busy"]) == ("healthy", DEFAULT_SLOTS, 0)  # no worker has used it yet
    raw[b"b:1|free"] = b"2"
    assert servers_state(model, raw)[1]["state"] == "down"
