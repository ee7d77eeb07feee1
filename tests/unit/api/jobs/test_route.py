"""A job's route is computed once, from the registry and the tenant: its key, model,
queue, the name its server knows, and what metrics may call it."""

from __future__ import annotations

import json

import pytest

from api.errors import ModelNotFound, QueueMismatch, QueueNotFound
from api.jobs.route import JobRouting
from shared.config import Config
from shared.contract import TaskName
from shared.registry import load_registry
from shared.tenants import Quotas, Tenant

pytestmark = pytest.mark.unit

MODELS = {
    "models": [
        {"name": "small", "aliases": ["qwen-1.5b"], "url": "http://gpu-a:8000", "served_name": "Qwen/Qwen2.5-1.5B"},
        {"name": "large", "url": "http://gpu-b:8000", "queue": "llm-large"},
    ],
    "default": "small",
}
ALPHA, DEFAULT = Tenant("alpha"), Tenant("default")


def routing(**settings: str) -> JobRouting:
    config = Config(_env_file=None, queue_name="q", **settings)  # type: ignore[call-arg]
    return JobRouting(config, load_registry(config))


def test_a_job_goes_to_its_models_queue_named_as_its_server_knows_it() -> None:
    route, job = routing(models=json.dumps(MODELS)).route(
        TaskName.CHAT, "j1", {"meta": {"model": "qwen-1.5b", "priority": 7}, "messages": []}, ALPHA
    )
    assert (route.key, route.model, route.label, route.queue, route.priority) == (
        "alpha~j1", "small", "small", "q.small", 7,
    )  # fmt: skip
    assert job["meta"]["model"] == "Qwen/Qwen2.5-1.5B" and job["route"] == "small" and job["tenant"] == "alpha"
    assert route.log_context() == {"job_id": "alpha~j1", "model": "small", "queue": "q.small", "tenant": "alpha"}


def test_a_job_naming_no_model_goes_to_the_default_and_the_default_tenant_keeps_its_id() -> None:
    route, _ = routing(models=json.dumps(MODELS)).route(TaskName.GENERATE, "j2", {"meta": {}, "content": "x"}, DEFAULT)
    assert (route.key, route.model, route.queue, route.priority) == ("j2", "small", "q.small", None)


def test_a_job_sent_with_a_projects_key_carries_the_keys_id_for_its_usage() -> None:
    _, job = routing(models=json.dumps(MODELS)).route(
        TaskName.CHAT, "j5", {"meta": {}, "messages": []}, Tenant("proj_a", key_id="key_1")
    )
    assert (job["tenant"], job["key_id"]) == ("proj_a", "key_1")
    _, job = routing().route(TaskName.CHAT, "j6", {"meta": {}, "messages": []}, ALPHA)  # a key without an id
    assert "key_id" not in job


def test_a_model_the_registry_does_not_list_is_refused_before_anything_is_queued() -> None:
    with pytest.raises(ModelNotFound, match="made-up"):
        routing(models=json.dumps(MODELS)).route(TaskName.CHAT, "j3", {"meta": {"model": "made-up"}}, ALPHA)


def test_without_a_registry_any_name_goes_to_the_one_server_and_is_counted_as_its() -> None:
    route, job = routing().route(TaskName.CHAT, "j4", {"meta": {"model": "made-up-7"}, "messages": []}, ALPHA)
    assert (route.model, route.label, route.queue) == ("made-up-7", "default", "q")
    assert job["meta"]["model"] == "made-up-7" and "route" not in job


def test_the_gateways_own_jobs_are_no_tenants() -> None:
    route, job = routing().route(TaskName.MODELS, "models-1", {}, ALPHA)
    assert route.internal and route.key == "models-1" and job == {}


def test_metrics_never_name_a_model_a_client_made_up() -> None:
    assert routing(models=json.dumps(MODELS)).label({"meta": {"model": "made-up"}}) == "unknown"
    assert routing(models=json.dumps(MODELS)).label({"meta": {"model": "qwen-1.5b"}}) == "small"
    assert routing().label({"meta": {"model": "anything"}}) == "default"


def test_a_queue_name_names_its_model_unless_meta_model_names_another() -> None:
    jobs = routing(models=json.dumps(MODELS))
    assert jobs.meta_for_queue("llm-large", {})["model"] == "large"
    assert jobs.meta_for_queue("llm-large", {"model": "large"}) == {"model": "large"}
    with pytest.raises(QueueMismatch, match="llm-large"):
        jobs.meta_for_queue("llm-large", {"model": "small"})
    with pytest.raises(QueueNotFound):
        jobs.meta_for_queue("no-such-queue", {})


def test_a_priority_above_the_tenants_highest_runs_at_its_highest() -> None:
    capped = Tenant("alpha", quotas=Quotas(max_priority=5))
    route, job = routing(models=json.dumps(MODELS)).route(
        TaskName.CHAT, "j1", {"meta": {"model": "small", "priority": 9}, "messages": []}, capped
    )
    assert route.priority == 5 and job["meta"]["priority"] == 5
    # Below it, or none given (the default, 5), as asked; a lower highest lowers the default too.
    route, job = routing().route(TaskName.CHAT, "j2", {"meta": {"priority": 2}, "messages": []}, capped)
    assert route.priority == 2 and job["meta"]["priority"] == 2
    low = Tenant("alpha", quotas=Quotas(max_priority=3))
    route, job = routing().route(TaskName.CHAT, "j3", {"meta": {}, "messages": []}, low)
    assert route.priority == 3 and job["meta"]["priority"] == 3
    # A tenant with no highest (a deployment of one tenant) has every priority.
    route, _ = routing().route(TaskName.CHAT, "j4", {"meta": {"priority": 9}, "messages": []}, ALPHA)
    assert route.priority == 9
