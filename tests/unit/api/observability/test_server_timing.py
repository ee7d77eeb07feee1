"""What the gateway costs each answer (api/observability/server_timing.py): the
Server-Timing header's parts, and their histograms counted once per answer."""

from __future__ import annotations

import pytest

from api.jobs.route import JobRoute
from api.observability.metrics import Metrics
from api.observability.server_timing import Timing
from shared.tenants import Tenant

pytestmark = pytest.mark.unit


def test_an_answer_run_for_another_request_says_its_total_only() -> None:
    timing = Timing(started=100.0)
    timing.answered("m", {"queued_seconds": 5.0, "model_seconds": 2.0})
    assert timing.parts(101.0) == {"total": 1.0, "gateway": 1.0}
    assert timing.header(101.0) == "total;dur=1000.0, gateway;dur=1000.0"


def test_the_parts_are_counted_once_per_answer() -> None:
    metrics = Metrics()
    timing = Timing(started=100.0)
    timing.answered("m", {"queued_seconds": 0.5, "model_seconds": 2.0, "first_token_seconds": 0.25})
    assert timing.parts(103.0) == {"total": 3.0, "queue": 0.5, "model": 2.0, "ttft": 0.25, "gateway": 0.5}
    timing.observe(metrics, 103.0)
    timing.observe(metrics, 104.0)
    assert metrics.registry.get_sample_value("llm_api_gateway_overhead_seconds_count", {"model": "m"}) == 1
    assert metrics.registry.get_sample_value("llm_api_gateway_overhead_seconds_sum", {"model": "m"}) == 0.5
    assert metrics.registry.get_sample_value("llm_api_model_seconds_sum", {"model": "m"}) == 2.0


def test_a_request_with_no_job_counts_nothing() -> None:
    metrics = Metrics()
    Timing(started=0.0).observe(metrics, 1.0)
    assert metrics.registry.get_sample_value("llm_api_gateway_overhead_seconds_count", {"model": "m"}) is None


def test_a_timing_told_of_its_job_names_it_and_counts_a_stream_as_it_ends() -> None:
    metrics = Metrics()
    timing = Timing(started=0.0, metrics=metrics)
    route = JobRoute("llm.generate", "j-1", "j-1", Tenant("default"), "m", "m", "q")
    timing.ran(route)
    assert timing.job == {"job_id": "j-1", "model": "m", "queue": "q", "tenant": "default"}
    assert timing.model is None  # queued, not answered yet
    timing.ran(route, {"timing": {"queued_seconds": 0.5, "model_seconds": 1.0}, "served_model": "m-2"})
    assert timing.served_model == "m-2" and timing.parts(3.0)["queue"] == 0.5
    timing.ended(3.0)
    assert metrics.registry.get_sample_value("llm_api_gateway_overhead_seconds_count", {"model": "m"}) == 1


def test_a_streamed_answers_header_says_its_time_to_accept_only() -> None:
    timing = Timing(started=10.0)
    timing.answered("m", {"queued_seconds": 0.5, "model_seconds": 1.0})
    assert timing.header(10.25, streamed=True) == "accept;dur=250.0"


def test_a_workers_timing_that_is_not_a_number_is_left_out() -> None:
    timing = Timing(started=0.0)
    timing.answered("m", {"queued_seconds": "soon", "model_seconds": True, "first_token_seconds": -1})
    assert timing.parts(2.0) == {"total": 2.0, "ttft": 0.0, "gateway": 2.0}
    timing.answered("m", None, served_model=7)
    assert timing.served_model is None and timing.parts(1.0)["gateway"] == 1.0
