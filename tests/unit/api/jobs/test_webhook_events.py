"""The webhook events the API sends (api/jobs/webhook_events.py): one delivery per
endpoint that takes the event, queued on the broker; none where none takes it."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from api.errors import BrokerUnavailable
from api.jobs.webhook_events import WebhookEvents
from tests.unit.api.edge import config, running_parts

pytestmark = pytest.mark.unit

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
HOOKS = json.dumps([
    {"url": "https://a.example.com/x", "secret": SECRET, "events": ["batch.completed", "job.cancelled"]},
    {"url": "https://b.example.com/x", "secret": SECRET, "events": ["batch.completed", "response.cancelled"]},
])  # fmt: skip


def test_each_endpoint_that_takes_an_event_gets_its_delivery() -> None:
    async def main() -> None:
        async with running_parts(config(webhooks=HOOKS)) as parts:
            events = WebhookEvents(parts.config, parts.queue)
            assert events.for_jobs and events.for_responses
            await events.emit("batch.completed", "batch_1")
            await events.emit("job.cancelled", "j1")
            await events.emit("batch.failed", "batch_2")  # taken by none: nothing queued
            sent = [(s.job["endpoint"], s.job["event"]["type"]) for s in parts.broker.sent]
            assert sent == [("https://a.example.com/x", "batch.completed"), ("https://b.example.com/x",
                            "batch.completed"), ("https://a.example.com/x", "job.cancelled")]  # fmt: skip
            assert {s.queue for s in parts.broker.sent} == {parts.config.webhook_queue}
            parts.broker.down = True
            with pytest.raises(BrokerUnavailable, match="webhook event not queued"):
                await events.emit("batch.completed", "batch_3")

    asyncio.run(main())


def test_without_endpoints_no_job_or_response_is_marked_for_webhooks() -> None:
    async def main() -> None:
        async with running_parts() as parts:
            events = WebhookEvents(parts.config, parts.queue)
            assert not events.for_jobs and not events.for_responses
            await events.emit("batch.completed", "batch_1")
            assert not parts.broker.sent

    asyncio.run(main())
