"""A trace collector for tests: OTLP/HTTP (protobuf) on a free port, keeping every span it receives.

It speaks the protocol the OpenTelemetry Collector, Jaeger and Tempo speak on
``/v1/traces``: the body is an ``ExportTraceServiceRequest`` (gzip or not), the answer
an ``ExportTraceServiceResponse``.
"""

from __future__ import annotations

import gzip
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


@dataclass
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    events: list[str]


class Collector:
    """Receives spans at ``{url}/v1/traces``; with `keep` False it only counts them
    (the benchmark's sink: a real collector's work is on another host)."""

    def __init__(self, keep: bool = True) -> None:
        self.spans: list[Span] = []
        self.requests = 0
        self.bytes = 0
        self._lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/x-protobuf":
                    self.send_response(404 if self.path != "/v1/traces" else 415)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if keep:
                    request = ExportTraceServiceRequest()
                    request.ParseFromString(body)
                    collector._keep(request)
                else:
                    with collector._lock:
                        collector.requests += 1
                        collector.bytes += len(body)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *_: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="otlp-collector")
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _keep(self, request: ExportTraceServiceRequest) -> None:
        found = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    found.append(
                        Span(
                            service=str(resource.get("service.name", "")),
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            kind=span.kind,
                            start_ns=span.start_time_unix_nano,
                            end_ns=span.end_time_unix_nano,
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            events=[event.name for event in span.events],
                        )
                    )
        with self._lock:
            self.requests += 1
            self.spans.extend(found)

    def trace(self, trace_id: str) -> list[Span]:
        """The spans of one trace received so far."""
        with self._lock:
            return [span for span in self.spans if span.trace_id == trace_id]

    def of_job(self, job_id: str) -> list[Span]:
        """The spans received so far that name the job (``llm.job_id``)."""
        with self._lock:
            return [span for span in self.spans if span.attributes.get("llm.job_id") == job_id]

    def wait_for(self, trace_id: str, *names: str, timeout: float = 20.0, job: bool = False) -> list[Span]:
        """The trace's spans (with `job`: the job's, `trace_id` being its id) once every
        one of `names` arrived (or AssertionError)."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.of_job(trace_id) if job else self.trace(trace_id)
            missing = set(names) - {span.name for span in spans}
            if not missing:
                return spans
            if time.monotonic() > deadline:
                raise AssertionError(f"spans {sorted(missing)} of trace {trace_id} never arrived; got {spans}")
            time.sleep(0.05)


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None
