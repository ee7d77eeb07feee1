"""The model registry: its files (YAML or JSON), a model's servers and the forms they take, what it
refuses, and INNER_LLM_URL's list."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from shared.config import Config
from shared.registry import DEFAULT_SLOTS, Prices, RegistryError, UnknownModel, UnknownQueue, load_registry, server_name

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


def test_a_registry_file_in_yaml(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(
        "models:\n"
        "  - name: small\n    url: gpu-a:8000\n    api_key_env: SMALL_KEY\n"
        "  - name: large\n    url: http://gpu-b:8000/v1\n    queue: big-jobs\n"
        "default: large\n"
    )
    config = Config(_env_file=None, models_file=str(path), queue_name="q")  # type: ignore[call-arg]
    registry = load_registry(config)
    assert [(m.name, m.url, m.queue) for m in registry.models] == [
        ("small", "http://gpu-a:8000", "q.small"),
        ("large", "http://gpu-b:8000", "big-jobs"),
    ]
    assert registry.route(None).name == "large" and not registry.passthrough
    with pytest.raises(UnknownModel, match="small, large"):
        registry.route("medium")


@pytest.mark.parametrize(
    ("models", "fragment"),
    [
        ("not json", "not JSON"),
        ('{"models": []}', "non-empty list"),
        ('{"models": [{"name": "a"}]}', "'name' and 'url'"),
        ('{"models": [{"name": "a", "url": "x"}, {"name": "a", "url": "y"}]}', "listed twice"),
        ('{"models": [{"name": "a", "url": "x", "queue": "bad queue"}]}', "queue"),
        ('{"models": [{"name": "a", "url": "x"}], "default": "b"}', "default"),
    ],
)
def test_a_wrong_registry_is_refused_saying_why(models: str, fragment: str) -> None:
    with pytest.raises(RegistryError, match=fragment):
        load_registry(Config(_env_file=None, models=models))  # type: ignore[call-arg]


def test_inner_llm_url_alone_is_a_one_model_registry() -> None:
    registry = load_registry(Config(_env_file=None, inner_llm_url="m:1", queue_name="q"))  # type: ignore[call-arg]
    assert registry.passthrough and registry.route("anything").url == "http://m:1"
    assert registry.queues == ["q"]


def test_a_request_names_a_model_by_its_name_or_an_alias_and_a_queue_names_the_model_served_from_it() -> None:
    models = registry(
        {"name": "small", "aliases": ["quick"], "url": "a:1"},
        {"name": "large", "url": "b:1", "queue": "big"},
        {"name": "twin", "url": "c:1", "queue": "big"},
        queue_name="q",
    )
    assert (
        models.route("quick").name == "small"
        and models.route(None).name == "small"
        and models.route("").name == "small"
    )
    assert models.by_queue("big", "q").name == "large"  # the first listed of a shared queue
    assert models.by_queue("q", "q") is models.default
    with pytest.raises(UnknownQueue, match=r"the queues are: big, q, q\.small$"):
        models.by_queue("q.huge", "q")
    with pytest.raises(UnknownModel):
        models.by_name("quick")  # an alias routes a request; a worker's models are named
    assert models.queues_for("large, small") == ["big", "q.small"] and models.queues_for("") == ["big", "q.small"]
    with pytest.raises(UnknownModel):
        models.queues_for("medium")


def test_a_servers_name_is_its_host_port_and_path_without_anything_else() -> None:
    assert server_name("https://user:pw@gpu-a/v1 beta") == "gpu-a:443/v1_beta"
    assert server_name("http://gpu-b:8000/") == "gpu-b:8000"


def test_a_model_whose_server_serves_anthropics_messages_says_so_as_inner_llm_urls_may() -> None:
    listed = registry({"name": "qwen", "url": "gpu-a:8000", "messages_api": True}, {"name": "small", "url": "gpu-b"})
    assert listed.by_name("qwen").messages_api is True and listed.by_name("small").messages_api is False
    only = load_registry(Config(_env_file=None, inner_llm_url="http://gpu-a:8000", inner_llm_messages_api=True))  # type: ignore[call-arg]
    assert only.default.messages_api is True


def test_prices_cost_counts_cached_input_at_its_own_price_in_nano_usd() -> None:
    prices = Prices(input=0.15, cached_input=0.075, output=0.60)
    # 800 fresh input tokens x 0.15 + 200 cached x 0.075 + 100 output x 0.60 micro-USD
    assert prices.cost(1000, 100, cached_tokens=200) == 195_000
    assert Prices(input=1.0).cost(3, 0, cached_tokens=3) == 3_000  # cached at input's price when not set
    assert Prices(input=1.0).cost(3, 0, cached_tokens=9) == 3_000  # never more cached than input
    assert Prices().free and Prices().cost(10**6, 10**6) == 0


def test_prices_are_read_from_the_registry_and_bad_ones_refused() -> None:
    found = registry({"name": "m", "url": "http://m:1", "prices": {"input": 0.5, "output": 2}})
    assert found.by_name("m").prices == Prices(input=0.5, output=2.0)
    assert registry({"name": "m", "url": "http://m:1"}).by_name("m").prices.free
    for bad in ({"input": -1}, {"input": "1"}, {"inputs": 1}, [1], {"output": True}):
        with pytest.raises(RegistryError, match="prices"):
            registry({"name": "m", "url": "http://m:1", "prices": bad})
