"""Every job answer says what the gateway cost it (Server-Timing), and /metrics counts it per model."""

from __future__ import annotations

import re

import httpx
import openai
import pytest

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
