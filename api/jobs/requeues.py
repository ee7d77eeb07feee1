"""What this process remembers of the jobs it queued, to queue one again when its
message may be lost, and the bound on doing so.

- `Published`: the jobs this process published and awaits (what is needed to publish
  each again), until their answer; on a Redis broker, also those it queued without
  waiting (`awaited` False), until their result is stored.
- `RecentIds`: ids refused with 503 after their claim may have been made: a resend of
  one is queued again rather than left waiting for a job never queued.
- `Requeues`: every queuing again of a job under its id passes here, and is refused
  past MAX_REQUEUES: each is a message more on its model's queue, so a loop that kept
  doing it would flood the queue (logged and counted: ``llm_api_jobs_requeued``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from api.jobs.route import JobRoute
from api.observability.metrics import Metrics

log = logging.getLogger(__name__)

MAX_REQUEUES = 10


@dataclass(frozen=True)
class PublishedJob:
    """A job as it was published: what publishing it again takes."""

    route: JobRoute
    job: dict[str, Any]  # as sent (accepted_at, reply_to included)
    queue: str  # where it was sent (its tenant's queue of a contended model, or the model's)
    headers: dict[str, str]  # its trace's context
    awaited: bool = True  # a request waits for it (else: submitted without waiting)


class Published(dict[str, PublishedJob]):
    """The jobs this process published and awaits (or, on a Redis broker, queued without
    waiting and not yet answered), by key."""


class RecentIds:
    """A set of the most recent `size` ids added (the oldest forgotten first)."""

    def __init__(self, size: int) -> None:
        self._ids: dict[str, None] = {}
        self._size = size

    def add(self, job_id: str) -> None:
        self._ids.pop(job_id, None)
        self._ids[job_id] = None
        if len(self._ids) > self._size:
            del self._ids[next(iter(self._ids))]

    def discard(self, job_id: str) -> None:
        self._ids.pop(job_id, None)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._ids


class Requeues:
    """Counts each job queued again under its id, and refuses past MAX_REQUEUES."""

    def __init__(self, metrics: Metrics, size: int = 10_000) -> None:
        self._metrics = metrics
        self._counts: dict[str, int] = {}
        self._size = size

    def allow(self, key: str, reason: str) -> bool:
        """Whether the job of `key` may be queued again now (counted when it may)."""
        count = self._counts.pop(key, 0) + 1
        self._counts[key] = count
        if len(self._counts) > self._size:
            del self._counts[next(iter(self._counts))]
        refused = count > MAX_REQUEUES
        self._metrics.requeues.labels(reason, "true" if refused else "false").inc()
        if refused:
            log.error(
                "job not queued again: queued again %d times already by this process (at most %d)",
                count - 1, MAX_REQUEUES, extra={"job_id": key, "reason": reason},
            )  # fmt: skip
        return not refused
