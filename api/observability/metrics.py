"""What an operator watches, in Prometheus's format at ``GET /metrics``.

Per API process: requests by endpoint and status, their latency; per model, jobs'
end-to-end latency, time in queue, tokens generated; jobs this process awaits;
errors by cause; and at each scrape, the jobs waiting in each model's queue and the
dead letters (asked of the broker), and whether each part answered this process's last
readiness checks. The workers' own figures are Flower's ``/metrics``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from shared.servers import STATES

# The gateway's own part of an answer's time is small: finer buckets.
OVERHEAD_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class Metrics:
    """The API process's metrics, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "llm_api_requests", "HTTP requests answered, by endpoint, method and status",
            ["endpoint", "method", "status"], registry=r,
        )  # fmt: skip
        self.request_seconds = Histogram(
            "llm_api_request_seconds", "Seconds to answer a request, by endpoint", ["endpoint"],
            buckets=SECONDS, registry=r,
        )  # fmt: skip
        self.job_seconds = Histogram(
            "llm_api_job_seconds", "Seconds from a job's acceptance to its answer, by model and tenant",
            ["model", "tenant"], buckets=SECONDS, registry=r,
        )  # fmt: skip
        self.queue_seconds = Histogram(
            "llm_api_queue_seconds",
            "Seconds a job waited (in its queue, and its tenant's) before a worker started it, by model and tenant",
            ["model", "tenant"], buckets=SECONDS, registry=r,
        )  # fmt: skip
        self.tokens = Counter("llm_api_tokens", "Tokens generated, by model and tenant", ["model", "tenant"],
                              registry=r)  # fmt: skip
        self.jobs = Counter(
            "llm_api_jobs", "Job requests answered, by model, outcome (succeeded, or the error) and tenant",
            ["model", "outcome", "tenant"], registry=r,
        )  # fmt: skip
        self.quota_refusals = Counter(
            "llm_api_quota_refusals", "Requests refused for a tenant's quota (429), by tenant and quota",
            ["tenant", "quota"], registry=r,
        )  # fmt: skip
        self.overhead_seconds = Histogram(
            "llm_api_gateway_overhead_seconds",
            "Seconds of a job request's time that were neither waiting in the queue nor the model server's"
            " (its Server-Timing 'gateway'), by model",
            ["model"], buckets=OVERHEAD_SECONDS, registry=r,
        )  # fmt: skip
        self.model_seconds = Histogram(
            "llm_api_model_seconds", "Seconds a job's call to the model server took (Server-Timing 'model'), by model",
            ["model"], buckets=SECONDS, registry=r,
        )  # fmt: skip
        self.first_token_seconds = Histogram(
            "llm_api_time_to_first_token_seconds",
            "Seconds from a job's call to the model server to the first piece of its answer, by model",
            ["model"], buckets=SECONDS, registry=r,
        )  # fmt: skip
        self.errors = Counter("llm_api_errors", "Errors answered, by cause", ["cause"], registry=r)
        self.requeues = Counter(
            "llm_api_jobs_requeued",
            "Jobs queued again under the same id (lost messages, a refused publish retried), by reason and"
            " whether the ceiling refused it",
            ["reason", "refused"], registry=r,
        )  # fmt: skip
        self.in_flight = Gauge("llm_api_jobs_in_flight", "Jobs this API process is awaiting", registry=r)
        self._waiting: dict[str, int] = {}
        r.register(_Waiting(self._waiting))
        self._webhooks: dict[tuple[str, str], int] = {}
        r.register(_Webhooks(self._webhooks))
        self._batches: dict[tuple[str, str], int] = {}
        r.register(_Batches(self._batches))
        self._scaling: dict[str, dict[str, Any]] = {}
        r.register(_Scaling(self._scaling))
        self._dead: dict[str, int] = {}
        r.register(_DeadLetters(self._dead))
        self._parts: dict[str, dict[str, Any]] = {}
        r.register(_Parts(self._parts))

    def observe_answer(self, model: str, tenant: str, result: dict[str, Any], seconds: float | None) -> None:
        """A job answered: its model and tenant, its result (usage, timing), seconds since accepted."""
        self.jobs.labels(model, "succeeded", tenant).inc()
        if seconds is not None:
            self.job_seconds.labels(model, tenant).observe(seconds)
        timing = result.get("timing") or {}
        if isinstance(timing.get("queued_seconds"), int | float):
            self.queue_seconds.labels(model, tenant).observe(max(0.0, timing["queued_seconds"]))
        usage = result.get("usage") or {}
        if isinstance(usage.get("completion_tokens"), int):
            self.tokens.labels(model, tenant).inc(usage["completion_tokens"])

    def observe_cost(self, model: str, parts: dict[str, float]) -> None:
        """A job request answered, its time in parts (api/observability/server_timing.py)."""
        self.overhead_seconds.labels(model).observe(parts["gateway"])
        if "model" in parts:
            self.model_seconds.labels(model).observe(parts["model"])
        if "ttft" in parts:
            self.first_token_seconds.labels(model).observe(parts["ttft"])

    def observe_failure(self, model: str, tenant: str, cause: str) -> None:
        """A job request answered with an error (counted by cause with every error, by the route)."""
        self.jobs.labels(model, cause, tenant).inc()

    def render(
        self,
        waiting: dict[str, int],
        webhooks: dict[tuple[str, str], int] | None = None,
        batches: dict[tuple[str, str], int] | None = None,
        scaling: dict[str, dict[str, Any]] | None = None,
        dead_letters: dict[str, int] | None = None,
        parts: dict[str, dict[str, Any]] | None = None,
    ) -> bytes:
        """The text format, with what was read just before: `waiting` (jobs per queue),
        `webhooks` (deliveries per endpoint and outcome, over all workers), `batches`
        (lines per model and state, of the batches this process drives), `scaling`
        (each model's signals, api/observability/scaling.py), `dead_letters` (messages
        in the dead-letter queue, by its name; empty when the broker did not answer),
        `parts` (the last readiness checks, by check name: api/observability/readiness.py)."""
        read_now = ((self._waiting, waiting), (self._webhooks, webhooks), (self._batches, batches),
                    (self._scaling, scaling), (self._dead, dead_letters), (self._parts, parts))  # fmt: skip
        for mine, read in read_now:
            mine.clear()
            mine.update(read or {})  # type: ignore[attr-defined]
        return generate_latest(self.registry)


class _Waiting(Collector):
    def __init__(self, waiting: dict[str, int]) -> None:
        self._waiting = waiting

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily("llm_api_jobs_waiting", "Jobs waiting in each queue (the broker's count)",
                                   labels=["queue"])  # fmt: skip
        for queue, count in sorted(self._waiting.items()):
            family.add_metric([queue], count)
        yield family


class _Webhooks(Collector):
    def __init__(self, counts: dict[tuple[str, str], int]) -> None:
        self._counts = counts

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(
            "llm_api_webhook_deliveries",
            "Webhook delivery tries by endpoint and outcome (delivered, failed_try, gave_up), over all workers",
            labels=["endpoint", "outcome"],
        )
        for (endpoint, outcome), count in sorted(self._counts.items()):
            family.add_metric([endpoint, outcome], count)
        yield family


class _Batches(Collector):
    def __init__(self, lines: dict[tuple[str, str], int]) -> None:
        self._lines = lines

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "llm_api_batch_lines",
            "Lines of the batches this API process drives, by model and state"
            " (waiting: not queued yet; running: queued or running; completed; failed)",
            labels=["model", "state"],
        )
        for (model, state), count in sorted(self._lines.items()):
            family.add_metric([model, state], count)
        yield family


class _DeadLetters(Collector):
    def __init__(self, dead: dict[str, int]) -> None:
        self._dead = dead

    def collect(self) -> Iterable[Metric]:
        # No sample when the broker did not answer (rather than -1): a rule on how fast
        # the count grows would read a way back from -1 as that many new dead letters.
        family = GaugeMetricFamily(
            "llm_api_dead_letters", "Messages in the dead-letter queue (the broker's count)", labels=["queue"]
        )
        for queue, count in sorted(self._dead.items()):
            family.add_metric([queue], count)
        yield family


class _Parts(Collector):
    def __init__(self, checks: dict[str, dict[str, Any]]) -> None:
        self._checks = checks

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "llm_api_part_up",
            "1 if the part answered this API process's last readiness check, else 0 (GET /ready), by part"
            " (broker, result_store, ...; model_server and workers by model; database: the control plane's,"
            " at its last poll, not a readiness check)",
            labels=["part", "model"],
        )
        for name, check in sorted(self._checks.items()):
            part, _, model = name.partition(":")  # "broker"; "model_server:small"
            family.add_metric([part, model], 1 if check["ok"] else 0)
        yield family


# The scaling signals (api/observability/scaling.py): gauge name, its field, its help.
SCALING_GAUGES = (
    ("llm_api_model_jobs_waiting", "waiting", "Jobs of the model not started: queued, or held by a worker for a slot"),
    ("llm_api_model_oldest_waiting_seconds", "oldest_waiting_seconds", "Seconds its oldest job not started has waited"),
    ("llm_api_model_jobs_running", "running", "The model's jobs running on workers"),
    ("llm_api_model_worker_slots", "slots", "Pool slots of the workers consuming the model's queue"),
    ("llm_api_model_worker_slots_busy", "busy_slots", "Those slots executing a task"),
    ("llm_api_model_workers", "workers", "Worker processes consuming the model's queue"),
    ("llm_api_model_demand", "demand", "Slots the model needs now: jobs waiting plus slots busy"),
)  # fmt: skip


# The servers of models with several (docs/servers.md): name, its field, its help, its kind.
SERVER_FAMILIES = (
    ("llm_api_model_server_slots", "slots", "Calls the server takes at once", GaugeMetricFamily),
    ("llm_api_model_server_busy", "busy", "Its slots held by jobs now", GaugeMetricFamily),
    ("llm_api_model_server_failures_in_a_row", "failures_in_a_row", "Its calls failed in a row", GaugeMetricFamily),
    ("llm_api_model_server_jobs", "jobs", "Jobs the server answered", CounterMetricFamily),
    ("llm_api_model_server_failures", "failures", "Calls to the server that failed", CounterMetricFamily),
)  # fmt: skip


class _Scaling(Collector):
    def __init__(self, signals: dict[str, dict[str, Any]]) -> None:
        self._signals = signals

    def collect(self) -> Iterable[Metric]:
        for name, field, description in SCALING_GAUGES:
            family = GaugeMetricFamily(name, f"{description}, by model (GET /scaling)", labels=["model"])
            for model, signals in sorted(self._signals.items()):
                family.add_metric([model], signals[field])
            yield family
        pooled = sorted((model, signals) for model, signals in self._signals.items() if signals.get("servers"))
        state = GaugeMetricFamily(
            "llm_api_model_server_state", "1 for the server's state (healthy, draining, down), by model and server",
            labels=["model", "server", "state"],
        )  # fmt: skip
        for model, signals in pooled:
            for server in signals["servers"]:
                for each in STATES:
                    state.add_metric([model, server["name"], each], 1 if server["state"] == each else 0)
        yield state
        for name, field, description, kind in SERVER_FAMILIES:
            family = kind(name, f"{description}, by model and server", labels=["model", "server"])
            for model, signals in pooled:
                for server in signals["servers"]:
                    family.add_metric([model, server["name"]], server[field])
            yield family
        waiting = GaugeMetricFamily(
            "llm_api_model_jobs_waiting_for_server", "Jobs held by workers waiting for a free server slot, by model",
            labels=["model"],
        )  # fmt: skip
        for model, signals in pooled:
            waiting.add_metric([model], signals["waiting_for_server"])
        yield waiting
