"""The benchmark's load generator against the fake model server: counts every request and its outcome."""

from __future__ import annotations

import asyncio

import pytest

from bench import loadgen
from tests.fake_model_server import FakeModelServer, free_port

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
