"""One trace per job, across real API and worker processes, sent over OTLP to a collector.

The collector is a test's (testing/otlp_collector.py, speaking OTLP/HTTP as the
OpenTelemetry Collector does); the client's trace is continued from its
``traceparent``, and the model server is sent the trace's context.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import httpx
import openai
import pytest

from tasks import dead_letters
from testing.fake_model_server import FakeModelServer
from testing.otlp_collector import Collector, Span
from testing.processes import wait_for_output
from tests.conftest import Stack, StackFactory

pytestmark = pytest.mark.integration

SERVER, PRODUCER, CONSUMER, CLIENT = 2, 4, 5, 3  # OTLP's SpanKind values


@pytest.fixture
def collector() -> Iterator[Collector]:
    started = Collector()
    yield started
    started.stop()


@pytest.fixture
def traced(make_stack: StackFactory, collector: Collector) -> Stack:
    # Spans sent every 100 ms, not every 5 s: the test waits less.
    return make_stack(OTEL_EXPORTER_OTLP_ENDPOINT=collector.url, OTEL_BSP_SCHEDULE_DELAY="100")


def client(stack: Stack, trace_id: str, parent_id: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{stack.url}/v1", api_key="not-needed", max_retries=0, timeout=30,
        default_headers={"traceparent": f"00-{trace_id}-{parent_id}-01"}, _strict_response_validation=True,
    )  # fmt: skip


def named(spans: list[Span], name: str) -> Span:
    (found,) = [span for span in spans if span.name == name]
    return found


def test_one_job_is_one_trace_across_api_worker_and_model_server(
    traced: Stack, collector: Collector, fake: FakeModelServer
) -> None:
    trace_id, caller = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    answer = client(traced, trace_id, caller).chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "Hello"}], max_tokens=5
    )
    assert answer.choices[0].message.content == "echo: Hello"
    spans = collector.wait_for(
        trace_id, "POST /v1/chat/completions", "publish " + traced.env["QUEUE_NAME"], "await result",
        "queue wait", "run/llm.chat", "POST /v1/chat/completions", "store result",
    )  # fmt: skip
    request = next(s for s in spans if s.name == "POST /v1/chat/completions" and s.service == "llm-api")
    call = next(s for s in spans if s.name == "POST /v1/chat/completions" and s.service == "llm-worker")
    publish = named(spans, "publish " + traced.env["QUEUE_NAME"])
    run, queued, stored, awaited = (named(spans, n) for n in ("run/llm.chat", "queue wait", "store result",
                                                               "await result"))  # fmt: skip
    # The parent order: the client's span, the API's request, its publish; the worker's
    # run and time in queue under the publish; the model call and the store under the run.
    assert request.parent_id == caller and request.kind == SERVER
    assert publish.parent_id == request.span_id and publish.kind == PRODUCER
    assert awaited.parent_id == request.span_id
    assert run.parent_id == publish.span_id and run.kind == CONSUMER and run.service == "llm-worker"
    assert queued.parent_id == publish.span_id
    assert call.parent_id == run.span_id and call.kind == CLIENT
    assert stored.parent_id == run.span_id
    job_id = publish.attributes["llm.job_id"]
    assert job_id and run.attributes["llm.job_id"] == job_id
    assert publish.attributes["llm.model"] == run.attributes["llm.model"] == "fake-model"
    assert request.attributes["llm.job_id"] == job_id
    # In time: queued from acceptance (as it was published) until the run began; the call inside the run.
    assert request.start_ns <= queued.start_ns <= publish.end_ns and queued.end_ns <= call.start_ns
    assert run.start_ns <= call.start_ns <= call.end_ns <= stored.start_ns <= run.end_ns
    # The model server was sent the model call's context: its own spans join the trace.
    assert fake.last_headers["traceparent"] == f"00-{trace_id}-{call.span_id}-01"
    # The logs name the trace: the API's access line and the worker's "job done".
    api = next(p for p in traced.processes.started if p.name == "api")
    worker = next(p for p in traced.processes.started if p.name.startswith("worker"))
    wait_for_output(worker, job_id)

    def about(output: str) -> list[dict]:
        return [json.loads(line[line.index("{") :]) for line in output.splitlines() if job_id in line]

    (access,) = [line for line in about(api.output()) if line["logger"] == "api.access"]
    (done,) = [line for line in about(worker.output()) if line["message"] == "job done"]
    assert access["trace_id"] == done["trace_id"] == trace_id
    assert done["span_id"] == run.span_id


def test_a_stream_records_its_first_token(traced: Stack, collector: Collector, fake: FakeModelServer) -> None:
    fake.chunk_delay = 0.05
    trace_id, caller = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    stream = client(traced, trace_id, caller).chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "one two three"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "echo: one two three"
    spans = collector.wait_for(trace_id, "await stream", "run/llm.chat", "store result")
    call = next(s for s in spans if s.name == "POST /v1/chat/completions" and s.service == "llm-worker")
    assert call.events == ["first token"]
    request = next(s for s in spans if s.service == "llm-api" and s.kind == SERVER)
    assert named(spans, "await stream").parent_id == request.span_id


def test_a_job_without_a_caller_trace_starts_its_own(traced: Stack, collector: Collector) -> None:
    answer = httpx.post(f"{traced.url}/generate", json={"job_id": "no-caller-trace", "content": "x"}, timeout=30)
    assert answer.status_code == 200
    publish = "publish " + traced.env["QUEUE_NAME"]
    spans = collector.wait_for("no-caller-trace", publish, "run/llm.generate", "store result", job=True)
    assert len({span.trace_id for span in spans}) == 1
    assert named(spans, "run/llm.generate").parent_id == named(spans, publish).span_id
    # The job's status names its trace, to find it by.
    status = httpx.get(f"{traced.url}/jobs/no-caller-trace", timeout=10).json()
    assert status["result"]["trace_id"] == spans[0].trace_id


def test_with_tracing_off_nothing_is_sent_and_nothing_is_instrumented(stack: Stack, fake: FakeModelServer) -> None:
    answer = httpx.post(f"{stack.url}/generate", json={"content": "untraced"}, timeout=30)
    assert answer.status_code == 200
    assert "traceparent" not in fake.last_headers
    status = httpx.get(f"{stack.url}/jobs/{answer.json()['job_id']}", timeout=10).json()
    assert status["result"]["content"] == "echo: untraced" and "trace_id" not in status["result"]
    # A whole API and worker built without an endpoint load no instrumentation and set
    # no tracer provider (FastAPI and redis-py import OpenTelemetry's API and SDK themselves).
    script = (
        "import sys; from api.main import create_app; from shared.config import Config; "
        "create_app(Config(_env_file=None)); import tasks.llm, tasks.wiring; "
        "from opentelemetry import trace; print(type(trace.get_tracer_provider()).__name__, "
        "sorted(m for m in sys.modules if m.startswith('opentelemetry.instrumentation')))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "ProxyTracerProvider []"


def _await_job(stack: Stack, job_id: str, status: str = "succeeded", seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if httpx.get(f"{stack.url}/jobs/{job_id}", timeout=10).json().get("status") == status:
            return
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} not {status} within {seconds}s")


@pytest.mark.fault
def test_a_job_run_again_after_its_worker_died_stays_in_its_trace(
    make_stack: StackFactory, collector: Collector, fake: FakeModelServer
) -> None:
    stack = make_stack(
        workers=1, JOB_LEASE="3", OTEL_EXPORTER_OTLP_ENDPOINT=collector.url, OTEL_BSP_SCHEDULE_DELAY="100"
    )
    trace_id, caller = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    fake.latency = 30  # the first run never ends: its worker is killed during it
    headers = {"traceparent": f"00-{trace_id}-{caller}-01", "Prefer": "respond-async"}
    accepted = httpx.post(f"{stack.url}/generate", json={"job_id": "rerun", "content": "x"}, headers=headers,
                          timeout=30)  # fmt: skip
    assert accepted.status_code == 202
    deadline = time.monotonic() + 20
    while fake.in_flight < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake.in_flight == 1
    stack.processes.started[0].kill()
    fake.latency = 0
    stack.processes.worker(stack.env, name="replacement")
    _await_job(stack, "rerun")
    spans = collector.wait_for(trace_id, "run/llm.generate", "store result")
    publish = named(spans, "publish " + stack.env["QUEUE_NAME"])
    # The killed run's spans died with it; the second run continues the same trace.
    assert named(spans, "run/llm.generate").parent_id == publish.span_id
    assert len(fake.completions) == 2


@pytest.mark.fault
def test_a_dead_letter_replayed_runs_in_the_trace_it_failed_in(
    make_stack: StackFactory, collector: Collector, fake: FakeModelServer
) -> None:
    stack = make_stack(workers=1, LLM_MAX_RETRIES="0", OTEL_EXPORTER_OTLP_ENDPOINT=collector.url,
                       OTEL_BSP_SCHEDULE_DELAY="100")  # fmt: skip
    trace_id, caller = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    fake.stop()
    try:
        failed = httpx.post(f"{stack.url}/generate", json={"job_id": "replayed", "content": "x"},
                            headers={"traceparent": f"00-{trace_id}-{caller}-01"}, timeout=30)  # fmt: skip
    finally:
        fake.start()
    assert failed.status_code == 502
    config = stack.config
    deadline = time.monotonic() + 20
    while not dead_letters.list_dead(config) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert dead_letters.replay(config, {"replayed"}).replayed == ["replayed"]
    _await_job(stack, "replayed")
    spans = collector.wait_for(trace_id, "run/llm.generate", "store result")

    # The two runs' spans, and the API's they hang from, arrive in separate exports of
    # separate processes: wait for both runs and their parents.
    def whole(spans: list[Span]) -> bool:
        runs = [span for span in spans if span.name == "run/llm.generate"]
        return len(runs) >= 2 and {run.parent_id for run in runs} <= {span.span_id for span in spans}

    deadline = time.monotonic() + 20
    while not whole(spans) and time.monotonic() < deadline:
        time.sleep(0.1)
        spans = collector.trace(trace_id)
    runs = [span for span in spans if span.name == "run/llm.generate"]
    assert len(runs) == 2  # the failed run and the replay, one trace
    assert {run.parent_id for run in runs} <= {span.span_id for span in spans}  # no orphan
