"""The events the API sends to webhooks: a batch's end (batch.completed, .failed,
.cancelled, .expired) and an asynchronous job's cancellation (job.cancelled), a background response's
(response.cancelled). Each is
queued on the broker as deliveries (shared/webhooks.py, tasks/webhook_delivery.py)."""

from __future__ import annotations

from api.jobs.queue import JobQueue
from shared.config import Config
from shared.webhooks import JOB_EVENTS, RESPONSE_EVENTS, load_endpoints


class WebhookEvents:
    """The webhook endpoints this API process sends events to."""

    def __init__(self, config: Config, queue: JobQueue) -> None:
        self._endpoints = load_endpoints(config)
        self._queue = queue
        # Jobs submitted without waiting carry `notify` only when some endpoint wants their end.
        self.for_jobs = any(endpoint.events & set(JOB_EVENTS) for endpoint in self._endpoints)
        self.for_responses = any(endpoint.events & set(RESPONSE_EVENTS) for endpoint in self._endpoints)

    async def emit(self, kind: str, object_id: str) -> None:
        """Queue `kind`'s event about `object_id` for the endpoints that take it
        (BrokerUnavailable when it could not be queued)."""
        endpoints = [endpoint for endpoint in self._endpoints if kind in endpoint.events]
        if endpoints:
            await self._queue.send_event(endpoints, kind, object_id)
