"""OpenTelemetry traces of jobs, across the API, the queue, the worker and the model server.

One trace per job (docs/observability.md):

    POST /v1/chat/completions           (API, server: a client's ``traceparent`` continues its trace)
    ├── publish {queue}                 (API, producer: the context goes into the task message's headers)
    │   ├── queue wait                  (worker: from the API accepting the job to a worker starting it)
    │   └── run/llm.chat                (worker, consumer: Celery's instrumentation, from the headers)
    │       ├── POST /v1/chat/completions   (worker, client: ``traceparent`` sent on to the model server)
    │       └── store result            (worker)
    └── await result                    (API)

A redelivered message keeps its headers, so a job run again joins its trace.

Tracing is on when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``)
is set and ``OTEL_SDK_DISABLED`` is not: spans go over OTLP/HTTP (protobuf), and the SDK
reads the usual ``OTEL_*`` variables (sampler, headers, batch sizes) from the environment.
Off, no instrumentation is loaded, no tracer provider is set, and each call here
returns at its first line.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

    from shared.config import Config

log = logging.getLogger(__name__)

_tracer: Tracer | None = None  # set by setup() when tracing is on
_provider: Any = None
_lock = threading.Lock()

# Span kinds by name, so callers need not import OpenTelemetry.
SERVER, CLIENT, PRODUCER, CONSUMER, INTERNAL = "server", "client", "producer", "consumer", "internal"


def traces_endpoint(config: Config) -> str:
    """Where spans are sent (OTLP/HTTP), or "" when tracing is off."""
    if config.otel_sdk_disabled:
        return ""
    if config.otel_exporter_otlp_traces_endpoint:
        return config.otel_exporter_otlp_traces_endpoint
    if config.otel_exporter_otlp_endpoint:
        return config.otel_exporter_otlp_endpoint.rstrip("/") + "/v1/traces"
    return ""


def setup(config: Config, service: str) -> bool:
    """Turn tracing on for this process when `config` says so (once); True when on."""
    global _tracer, _provider
    endpoint = traces_endpoint(config)
    if not endpoint:
        return False
    with _lock:
        if _tracer is not None:
            return True
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        resource = Resource.create({"service.name": config.otel_service_name or service})
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        trace.set_tracer_provider(provider)
        _provider = provider
        _tracer = trace.get_tracer("llm-api")
    log.info("tracing on: spans of %s go to %s", resource.attributes.get("service.name"), endpoint)
    return True


def enabled() -> bool:
    """Whether this process traces."""
    return _tracer is not None


def shutdown() -> None:
    """Send the spans not sent yet (as the process stops)."""
    if _provider is not None:
        _provider.shutdown()


def span(
    name: str,
    kind: str = INTERNAL,
    attributes: Mapping[str, Any] | None = None,
    parent: Mapping[str, str] | Any = None,
) -> contextlib.AbstractContextManager[Span | None]:
    """A span around the block, the current one within it (None when tracing is off).
    `parent`: W3C headers (or a Celery request) whose context it continues; else the current one."""
    if _tracer is None:
        return _OFF  # on every job's path: no generator, no allocation
    context = _extract(parent) if parent is not None else None
    return _tracer.start_as_current_span(name, context=context, kind=_kind(kind), attributes=attributes)


_OFF: contextlib.AbstractContextManager[None] = contextlib.nullcontext()


def record(
    name: str,
    started: float,
    ended: float,
    parent: Mapping[str, str] | Any = None,
    attributes: Mapping[str, Any] | None = None,
) -> None:
    """A span that has happened, from `started` to `ended` (time.time()): a job's time in its queue."""
    if _tracer is None:
        return
    context = _extract(parent) if parent is not None else None
    done = _tracer.start_span(name, context=context, attributes=attributes, start_time=_ns(started))
    done.end(end_time=_ns(max(started, ended)))


def start(name: str, attributes: Mapping[str, Any] | None = None) -> Span | None:
    """A span begun now, child of the current one but not made current (a stream's
    await, which outlives the task that began it); its caller ends it."""
    if _tracer is None:
        return None
    return _tracer.start_span(name, attributes=attributes)


def annotate(**attributes: Any) -> None:
    """Set attributes (``llm.job_id``, ...) on the current span; underscores become dots."""
    if _tracer is None:
        return
    from opentelemetry import trace

    current = trace.get_current_span()
    if current.is_recording():
        current.set_attributes({f"llm.{key}": value for key, value in attributes.items() if value is not None})


def event(name: str, at: float, **attributes: Any) -> None:
    """An event on the current span at `at` (time.monotonic()): the first token."""
    if _tracer is None:
        return
    from opentelemetry import trace

    when = time.time_ns() - int((time.monotonic() - at) * 1e9)
    trace.get_current_span().add_event(name, attributes=attributes, timestamp=when)


def inject() -> dict[str, str]:
    """The current context as W3C headers (``traceparent``), empty when off or outside a span."""
    if _tracer is None:
        return {}
    from opentelemetry import propagate

    headers: dict[str, str] = {}
    propagate.inject(headers)
    return headers


def log_ids() -> tuple[str, str] | None:
    """The current trace and span ids (hex), for log lines; None when off or outside a span."""
    if _tracer is None:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def headers_of(request: Any) -> dict[str, str]:
    """The W3C trace headers a Celery request's message carried (its headers are its attributes)."""
    found = {key: getattr(request, key, None) for key in ("traceparent", "tracestate")}
    return {key: value for key, value in found.items() if isinstance(value, str)}


def _extract(carrier: Mapping[str, str] | Any) -> Any:
    from opentelemetry import propagate

    return propagate.extract(carrier if isinstance(carrier, Mapping) else headers_of(carrier))


def _kind(kind: str) -> Any:
    from opentelemetry.trace import SpanKind

    return {SERVER: SpanKind.SERVER, CLIENT: SpanKind.CLIENT, PRODUCER: SpanKind.PRODUCER,
            CONSUMER: SpanKind.CONSUMER}.get(kind, SpanKind.INTERNAL)  # fmt: skip


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)
