"""Every job answer says what the gateway cost it (Server-Timing), and /metrics counts it per model."""

from __future__ import annotations

import re

import httpx
import openai
import pytest

from api.jobs.route import JobRoute
from api.observability.metrics import Metrics
from api.observability.server_timing import Timing
from shared.tenants import Tenant
from testing.fake_model_server import FakeModelServer
from tests.conftest import Stack


def parse(header: str) -> dict[str, float]:
    """``queue;dur=1.0, model;dur=2.0`` -> {"queue": 1.0, "model": 2.0} (milliseconds)."""
    parts = {}
    for entry in header.split(","):
        name, _, duration = entry.strip().partition(";dur=")
        parts[name] = float(duration)
    return parts


def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{stack.url}/v1", api_key="not-needed", max_retries=0, timeout=30, _strict_response_validation=True
    )


def metric(stack: Stack, name: str) -> float:
    """The sum of a metric's samples (every label) on the API's /metrics."""
    text = httpx.get(f"{stack.url}/metrics", timeout=10).text
    return sum(float(value) for value in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


@pytest.mark.integration
def test_an_answer_says_its_queue_model_and_gateway_times(stack: Stack, fake: FakeModelServer) -> None:
    fake.latency = 0.3  # before the model server's first byte
    before = metric(stack, "llm_api_model_seconds_count")
    raw = client(stack).chat.completions.with_raw_response.create(
        model="fake-model", messages=[{"role": "user", "content": "Hello"}], max_tokens=5
    )
    assert raw.parse().choices[0].message.content == "echo: Hello"
    timing = parse(raw.headers["server-timing"])
    assert set(timing) == {"queue", "model", "ttft", "gateway", "total"}
    assert timing["model"] >= 300 and timing["ttft"] >= 300
    assert timing["total"] >= timing["queue"] + timing["model"]
    assert timing["gateway"] == pytest.approx(timing["total"] - timing["queue"] - timing["model"], abs=0.2)
    assert metric(stack, "llm_api_model_seconds_count") == before + 1
    assert metric(stack, "llm_api_time_to_first_token_seconds_sum") >= 0.3


@pytest.mark.integration
def test_a_stream_says_its_time_to_accept_and_counts_its_parts_as_it_ends(stack: Stack, fake: FakeModelServer) -> None:
    before = metric(stack, "llm_api_gateway_overhead_seconds_count")
    with client(stack).chat.completions.with_streaming_response.create(
        model="fake-model", messages=[{"role": "user", "content": "Hi there"}], stream=True
    ) as response:
        assert set(parse(response.headers["server-timing"])) == {"accept"}
        text = "".join(chunk.choices[0].delta.content or "" for chunk in response.parse() if chunk.choices)
    assert text == "echo: Hi there"
    assert metric(stack, "llm_api_gateway_overhead_seconds_count") == before + 1


@pytest.mark.integration
def test_the_spec_endpoints_answer_with_server_timing_too(stack: Stack, fake: FakeModelServer) -> None:
    answer = httpx.post(f"{stack.url}/generate", json={"job_id": "st-1", "meta": {}, "content": "Hi"}, timeout=30)
    assert answer.status_code == 200
    assert {"queue", "model", "gateway", "total"} <= set(parse(answer.headers["server-timing"]))
    # The same job_id answered again: its queue and model times were the first request's.
    again = httpx.post(f"{stack.url}/generate", json={"job_id": "st-1", "meta": {}, "content": "Hi"}, timeout=30)
    assert again.json() == answer.json()


@pytest.mark.unit
def test_an_answer_run_for_another_request_says_its_total_only() -> None:
    timing = Timing(started=100.0)
    timing.answered("m", {"queued_seconds": 5.0, "model_seconds": 2.0})
    assert timing.parts(101.0) == {"total": 1.0, "gateway": 1.0}
    assert timing.header(101.0) == "total;dur=1000.0, gateway;dur=1000.0"


@pytest.mark.unit
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


@pytest.mark.unit
def test_a_request_with_no_job_counts_nothing() -> None:
    metrics = Metrics()
    Timing(started=0.0).observe(metrics, 1.0)
    assert metrics.registry.get_sample_value("llm_api_gateway_overhead_seconds_count", {"model": "m"}) is None


@pytest.mark.unit
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
