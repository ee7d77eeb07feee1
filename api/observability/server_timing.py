"""What the gateway costs on each answer: the ``Server-Timing`` header and its histograms.

A job's answer is timed in three parts, in milliseconds:

- ``queue``: from the API accepting the job to a worker starting it (the worker's
  clock against the API's);
- ``model``: the worker's call to the model server, retries included;
- ``gateway``: the rest of the request's time: reading and checking the request,
  publishing, the worker's own work, storing the result, hearing of it, answering.

``total`` is the request's whole time in the API, and ``ttft`` the model server's time
to the first piece of the answer. A streamed answer's headers leave before its answer
exists: they carry ``accept`` (the time to queue the job and start the stream) only;
its parts are counted in the histograms when the stream ends, as every answer's are.

The route class (api/http/route_class.py) makes each request's `Timing` and hands it to
the endpoint (``TimingDep``, api/deps.py); what runs the job tells it of the job
(`Timing.ran`): the answer the job runner returned, or a stream's last event.

An answer that is not this request's own run (a job_id answered before) says
``total`` and ``gateway`` only: its queue and model times were another request's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from api.observability.metrics import Metrics

if TYPE_CHECKING:
    from api.jobs.route import JobRoute


@dataclass
class Timing:
    """One request's times, filled in as its job is answered, and the job they are of
    (what the access line names)."""

    started: float  # time.perf_counter() as the request arrived
    model: str | None = None  # the model label of the job answered
    queue: float | None = None
    model_seconds: float | None = None
    first_token: float | None = None
    observed: bool = False
    served_model: str | None = None  # the model that answered, of a model with several servers or fallbacks
    metrics: Metrics | None = None  # where a stream's parts are counted as it ends
    job: dict[str, str] | None = None  # the job's id, model, queue and tenant, once it is queued

    def ran(self, route: JobRoute, answer: dict[str, Any] | None = None) -> None:
        """The request's job, queued (or followed) on `route`; with its `answer` once it came."""
        self.job = route.log_context()
        if answer is not None:
            self.answered(route.label, answer.get("timing"), answer.get("served_model"))

    def answered(self, model: str, timing: Any, served_model: Any = None) -> None:
        """The job's answer arrived, with the worker's `timing` (tasks/llm.py) and, from a
        model with a pool of servers, the model that served it (a fallback's, maybe)."""
        self.model = model
        self.served_model = served_model if isinstance(served_model, str) else None
        if not isinstance(timing, dict):
            return
        self.queue = _seconds(timing.get("queued_seconds"))
        self.model_seconds = _seconds(timing.get("model_seconds"))
        self.first_token = _seconds(timing.get("first_token_seconds"))

    def parts(self, now: float) -> dict[str, float]:
        """Seconds by part: queue, model, gateway and total (queue and model only when
        they are this request's: they fit in its time)."""
        total = max(0.0, now - self.started)
        parts = {"total": total}
        known = (self.queue or 0.0) + (self.model_seconds or 0.0)
        if self.model is not None and known <= total:
            if self.queue is not None:
                parts["queue"] = self.queue
            if self.model_seconds is not None:
                parts["model"] = self.model_seconds
            if self.first_token is not None:
                parts["ttft"] = self.first_token
        parts["gateway"] = total - parts.get("queue", 0.0) - parts.get("model", 0.0)
        return parts

    def header(self, now: float, streamed: bool = False) -> str:
        """The ``Server-Timing`` value (streamed: the time to accept only)."""
        if streamed:
            return _entry("accept", now - self.started)
        return ", ".join(_entry(name, seconds) for name, seconds in self.parts(now).items())

    def observe(self, metrics: Metrics, now: float) -> None:
        """Count the answer's parts in the histograms, once (a job's answers only)."""
        if self.observed or self.model is None:
            return
        self.observed = True
        parts = self.parts(now)
        metrics.observe_cost(self.model, parts)

    def ended(self, now: float) -> None:
        """A stream ended: its parts counted now (its headers left before they were known)."""
        if self.metrics is not None:
            self.observe(self.metrics, now)


def _entry(name: str, seconds: float) -> str:
    return f"{name};dur={seconds * 1000:.1f}"


def _seconds(value: Any) -> float | None:
    return max(0.0, float(value)) if isinstance(value, int | float) and not isinstance(value, bool) else None
