"""The benchmark's load generator against the fake model server: counts every request and its outcome."""

from __future__ import annotations

import asyncio
import time

import pytest

from bench import loadgen
from testing.fake_model_server import FakeModelServer, free_port

pytestmark = pytest.mark.integration  # a real server on a real port, but no broker

BODY = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}


def test_closed_loop_sends_exactly_the_requests_asked(fake: FakeModelServer) -> None:
    outcome = asyncio.run(loadgen.closed_loop(f"{fake.url}/v1/chat/completions", BODY, clients=5, requests=50))
    assert (outcome.ok, len(outcome.latencies), len(fake.completions)) == (50, 50, 50)
    assert fake.peak_in_flight <= 5


def test_open_loop_keeps_its_rate_whatever_the_answers(fake: FakeModelServer) -> None:
    fake.latency = 0.3  # slower than the rate: requests overlap instead of waiting
    outcome = asyncio.run(loadgen.open_loop(f"{fake.url}/v1/chat/completions", BODY, rate=100, seconds=0.5))
    assert outcome.ok == len(fake.completions) == 50
    assert fake.peak_in_flight > 5


def test_unanswered_requests_count_as_status_0() -> None:
    outcome = asyncio.run(loadgen.closed_loop(f"http://127.0.0.1:{free_port()}/x", BODY, clients=2, requests=4))
    assert outcome.statuses == [0, 0, 0, 0]


def test_a_duration_run_abandons_requests_unanswered_after_its_grace(fake: FakeModelServer) -> None:
    fake.latency = 2  # the server answers after the run's time and grace
    url = f"{fake.url}/v1/chat/completions"
    run = loadgen.for_duration(url, BODY, clients=3, seconds=0.2, grace=0.2)
    outcome = asyncio.run(asyncio.wait_for(run, 1.5))  # returns without waiting for the answers
    assert outcome.statuses == [] and len(fake.completions) == 3
    while fake.in_flight:  # the server finishes before the next test
        time.sleep(0.1)
