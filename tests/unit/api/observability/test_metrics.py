"""The API process's metrics (api/observability/metrics.py): each answer counted by model
and tenant, and what a scrape read just before rendered beside the counters (the parts
that answered the readiness checks, the dead letters among them)."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from api.observability.metrics import Metrics

pytestmark = pytest.mark.unit


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_an_answer_counts_its_job_tokens_and_times_by_model_and_tenant() -> None:
    metrics = Metrics()
    answer = {"usage": {"completion_tokens": 7}, "timing": {"queued_seconds": -0.5}}
    metrics.observe_answer("m", "alpha", answer, 2.0)
    metrics.observe_answer("m", "alpha", {"usage": {"completion_tokens": "7"}}, None)  # not a count: not counted
    metrics.observe_failure("m", "beta", "JobTimedOut")
    assert value(metrics, "llm_api_jobs_total", model="m", outcome="succeeded", tenant="alpha") == 2
    assert value(metrics, "llm_api_tokens_total", model="m", tenant="alpha") == 7
    assert value(metrics, "llm_api_job_seconds_count", model="m", tenant="alpha") == 1
    assert value(metrics, "llm_api_queue_seconds_sum", model="m", tenant="alpha") == 0.0  # a clock skew: not negative
    assert value(metrics, "llm_api_jobs_total", model="m", outcome="JobTimedOut", tenant="beta") == 1


def test_a_scrape_shows_what_was_read_just_before_and_nothing_older() -> None:
    metrics = Metrics()
    signals = {"waiting": 2, "oldest_waiting_seconds": 1.5, "running": 1, "slots": 4, "busy_slots": 1,
               "workers": 1, "demand": 3, "waiting_for_server": 1,
               "servers": [{"name": "gpu-b", "state": "draining", "slots": 2, "busy": 1, "failures_in_a_row": 0,
                            "jobs": 5, "failures": 1}]}  # fmt: skip
    text = metrics.render({"q": 3}, {("hooks", "delivered"): 2}, {("m", "running"): 4}, {"m": signals}).decode()
    for line in ('llm_api_jobs_waiting{queue="q"} 3.0', 'llm_api_webhook_deliveries_total{endpoint="hooks",'
                 'outcome="delivered"} 2.0', 'llm_api_batch_lines{model="m",state="running"} 4.0',
                 'llm_api_model_demand{model="m"} 3.0', 'llm_api_model_server_busy{model="m",server="gpu-b"} 1.0',
                 'llm_api_model_server_state{model="m",server="gpu-b",state="draining"} 1.0',
                 'llm_api_model_server_state{model="m",server="gpu-b",state="healthy"} 0.0',
                 'llm_api_model_jobs_waiting_for_server{model="m"} 1.0'):  # fmt: skip
        assert line in text, line
    later = metrics.render({"other": 0}).decode()
    assert 'queue="q"' not in later and 'llm_api_jobs_waiting{queue="other"} 0.0' in later
    assert "llm_api_model_demand{" not in later


def _parsed(text: bytes) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text.decode()):
        found.setdefault(family.name, {})
        for sample in family.samples:
            found[family.name][tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_each_readiness_check_is_a_part_up_or_down_and_a_models_part_names_the_model() -> None:
    checks = {
        "broker": {"ok": True, "detail": "connected"},
        "result_store": {"ok": False, "detail": "does not answer (ConnectionError)"},
        "model_server:small": {"ok": False, "detail": "no server of model small answers (of 2; each at /scaling)"},
        "model_server:org/big:v2": {"ok": True, "detail": "answered 200"},
        "workers:small": {"ok": True, "detail": "1 worker(s) on queue q.small"},
    }
    parts = _parsed(Metrics().render({}, parts=checks))["llm_api_part_up"]
    assert parts == {
        (("model", ""), ("part", "broker")): 1,
        (("model", ""), ("part", "result_store")): 0,
        (("model", "small"), ("part", "model_server")): 0,
        # Only the first colon divides: a model's name may hold more.
        (("model", "org/big:v2"), ("part", "model_server")): 1,
        (("model", "small"), ("part", "workers")): 1,
    }


def test_the_parts_are_those_of_the_last_report_only() -> None:
    metrics = Metrics()
    metrics.render({}, parts={"broker": {"ok": True, "detail": "connected"}, "database": {"ok": True, "detail": ""}})
    # Before the first round of checks (no report), no part is said to be up or down.
    assert _parsed(metrics.render({}, parts={})).get("llm_api_part_up") == {}
    again = _parsed(metrics.render({}, parts={"broker": {"ok": False, "detail": "does not answer"}}))
    assert again["llm_api_part_up"] == {(("model", ""), ("part", "broker")): 0}


def test_dead_letters_are_counted_by_queue_and_left_out_when_the_broker_did_not_answer() -> None:
    metrics = Metrics()
    assert _parsed(metrics.render({}, dead_letters={"llm-api-queue.dead": 7}))["llm_api_dead_letters"] == {
        (("queue", "llm-api-queue.dead"),): 7
    }
    # No figure rather than a false one: a rule on its growth would read a jump from -1.
    assert _parsed(metrics.render({"llm-api-queue": -1}, dead_letters={}))["llm_api_dead_letters"] == {}
