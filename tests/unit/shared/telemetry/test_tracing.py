"""Tracing, where it is on and where its spans go; off, every call is a no-op that
allocates nothing. Spans exported and joined across processes are in
tests/integration/test_tracing.py (turning tracing on here would set this process's
global tracer for every test after it)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from shared.config import Config
from shared.telemetry import tracing

pytestmark = pytest.mark.unit


def config(**settings: Any) -> Config:
    return Config(_env_file=None, **settings)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("settings", "endpoint"),
    [
        ({}, ""),
        ({"otel_exporter_otlp_endpoint": "http://collector:4318/"}, "http://collector:4318/v1/traces"),
        (
            {"otel_exporter_otlp_endpoint": "http://c:4318", "otel_exporter_otlp_traces_endpoint": "http://t:1/x"},
            "http://t:1/x",
        ),
        ({"otel_exporter_otlp_endpoint": "http://c:4318", "otel_sdk_disabled": True}, ""),
    ],
)
def test_spans_go_where_the_otel_variables_say_and_nowhere_when_disabled(
    settings: dict[str, Any], endpoint: str
) -> None:
    assert tracing.traces_endpoint(config(**settings)) == endpoint


def test_off_every_call_returns_at_once_and_nothing_is_sent_on() -> None:
    assert not tracing.setup(config(), "llm-api")
    assert not tracing.enabled()
    with tracing.span("POST /x", tracing.CLIENT, {"a": 1}) as span:
        assert span is None
    assert tracing.span("a") is tracing.span("b")  # the same no-op: nothing made per job
    assert tracing.inject() == {} and tracing.log_ids() is None and tracing.start("s") is None
    tracing.record("queue wait", 1.0, 2.0)
    tracing.annotate(job_id="j1")
    tracing.event("first token", 0.0)


def test_a_celery_requests_trace_headers_are_its_string_attributes_only() -> None:
    request = SimpleNamespace(traceparent="00-" + "a" * 32 + "-" + "b" * 16 + "-01", tracestate=None, id="j1")
    assert tracing.headers_of(request) == {"traceparent": request.traceparent}
    assert tracing.headers_of(object()) == {}
