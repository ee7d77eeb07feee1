"""The run command's plan: what it starts, and what it refuses to start."""

from __future__ import annotations

import pytest

from local_stack.run import Refused, plan
from local_stack.settings import LocalStack
from shared.config import Config
from shared.registry import load_registry

pytestmark = pytest.mark.unit


def test_flower_on_the_network_needs_a_password() -> None:
    with pytest.raises(Refused, match="FLOWER_BASIC_AUTH"):
        plan(Config(_env_file=None), LocalStack(_env_file=None, flower_host="0.0.0.0"))  # type: ignore[call-arg]


def test_flowers_password_is_passed_on_but_not_written_with_the_rest() -> None:
    steps = plan(
        Config(_env_file=None), LocalStack(_env_file=None, flower_host="0.0.0.0", flower_basic_auth="ops:s3cret")
    )  # type: ignore[call-arg]
    assert steps.secret_env["FLOWER_BASIC_AUTH"] == "ops:s3cret"
    assert "s3cret" not in repr(steps.env) and "s3cret" not in " ".join(steps.notes)


def test_flower_on_localhost_may_go_without() -> None:
    steps = plan(Config(_env_file=None), LocalStack(_env_file=None))  # type: ignore[call-arg]
    assert "flower" in steps.processes and "FLOWER_BASIC_AUTH" not in steps.secret_env


def test_a_run_without_a_compaction_secret_makes_one_for_all_its_processes_and_writes_it_nowhere() -> None:
    steps = plan(Config(_env_file=None), LocalStack(_env_file=None))  # type: ignore[call-arg]
    made = steps.secret_env["COMPACTION_SECRET"]
    assert Config(_env_file=None, compaction_secret=made).compaction_secret is not None  # type: ignore[call-arg]
    assert made not in repr(steps.env) and made not in " ".join(steps.notes)
    given = Config(_env_file=None, compaction_secret="k" * 32)  # type: ignore[call-arg]
    assert "COMPACTION_SECRET" not in plan(given, LocalStack(_env_file=None)).secret_env  # type: ignore[call-arg]


def test_a_clustered_broker_and_store_are_used_as_they_are_not_replaced_by_valkey() -> None:
    steps = plan(
        Config(_env_file=None, rabbit_mq_host="r1,r2:5673", redis_sentinels="s1,s2"), LocalStack(_env_file=None)
    )  # type: ignore[call-arg]
    assert "valkey" not in steps.processes and "REDIS_HOST" not in steps.env
    assert "broker: RabbitMQ at r1:5672, r2:5673" in steps.notes
    assert "result store: Redis master 'mymaster' of the Sentinels s1:26379, s2:26379" in steps.notes


def test_several_embedded_model_servers_are_one_models_servers() -> None:
    local = LocalStack(_env_file=None, model_servers=2, model_parallel=4)  # type: ignore[call-arg]
    steps = plan(Config(_env_file=None), local)  # type: ignore[call-arg]
    assert steps.processes[:2] == ["model", "model2"]
    assert steps.extra_processes == {"model2": "EMBEDDED_MODEL_PORT=8671 python -m local_stack.model_server"}
    assert steps.env["INNER_LLM_URL"] == "http://127.0.0.1:8670,http://127.0.0.1:8671"
    assert steps.env["INNER_LLM_SLOTS"] == "4"  # each takes what it decodes at once
    registry = load_registry(Config(_env_file=None, inner_llm_url=steps.env["INNER_LLM_URL"], inner_llm_slots=4))  # type: ignore[call-arg]
    assert [(s.name, s.slots) for s in registry.default.servers] == [("127.0.0.1:8670", 4), ("127.0.0.1:8671", 4)]
    assert registry.default.pooled


def test_one_embedded_model_server_is_the_procfiles_own() -> None:
    steps = plan(Config(_env_file=None), LocalStack(_env_file=None))  # type: ignore[call-arg]
    assert "model" in steps.processes and steps.extra_processes == {}
    assert steps.env["INNER_LLM_URL"] == "http://127.0.0.1:8670"
