"""A webhook delivery: what one try sends and where it refuses to go, the endpoint it
finds, what it counts, and when it gives up."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import standardwebhooks
from celery.exceptions import Retry

from shared.config import Config
from shared.contract.keys import webhook_count_field
from shared.storage import redis_clients
from shared.webhooks import Endpoint, event
from tasks.webhook_delivery import DeliveryFailed, WebhookGaveUp, deliver, send
from tasks.worker import Worker, WorkerTask
from testing.fake_model_server import free_port
from testing.scripted_redis import ScriptedRedis
from testing.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.unit

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def config(**settings: Any) -> Config:
    return Config(_env_file=None, **settings)  # type: ignore[call-arg]


def endpoint(url: str, events: frozenset[str] | None = None) -> Endpoint:
    return Endpoint(url, url, SECRET, events or frozenset({"batch.completed"}))


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver().start()
    yield server
    server.stop()


def test_a_redirect_is_not_followed(receiver: WebhookReceiver) -> None:
    receiver.redirect_to = "http://169.254.169.254/latest/meta-data"
    found = event("batch.completed", "batch_1")
    with pytest.raises(DeliveryFailed, match="redirects are not followed"):
        send(config(webhook_allow_private=True), endpoint(receiver.url), found)
    assert len(receiver.received) == 1  # and nothing else was asked
    with pytest.raises(DeliveryFailed, match="WEBHOOK_ALLOW_PRIVATE"):
        send(config(), endpoint(receiver.url), found)
    assert len(receiver.received) == 1


def test_a_delivery_is_the_signed_event_to_the_address_resolved_and_a_refusal_says_its_status(
    receiver: WebhookReceiver,
) -> None:
    found = event("batch.completed", "batch_1")
    assert send(config(webhook_allow_private=True), endpoint(receiver.url), found) == 200
    (got,) = receiver.received
    assert json.loads(got.body) == found
    checked = standardwebhooks.Webhook(SECRET).verify(got.body, got.headers)
    assert checked["id"] == found["id"] and got.headers["webhook-id"] == found["id"]
    assert got.headers["host"] == receiver.url.split("/")[2]  # the endpoint's host, though sent to its address
    receiver.answers = [503]
    with pytest.raises(DeliveryFailed, match="answered 503"):
        send(config(webhook_allow_private=True), endpoint(receiver.url), found)


def test_a_receiver_that_is_not_listening_is_named_not_its_url() -> None:
    url = f"http://127.0.0.1:{free_port()}/hooks?token=s3cret"
    with pytest.raises(DeliveryFailed) as failed:
        send(
            config(webhook_allow_private=True, webhook_timeout=2),
            Endpoint("billing", url, SECRET, frozenset()),
            {"id": "e"},
        )
    assert str(failed.value).startswith("ConnectError") and "s3cret" not in str(failed.value)


class Quiet:
    """The cancel channel of a worker that is sent no cancel."""

    def subscribe(self, channel: str) -> None:
        pass

    def get_message(self, timeout: float) -> None:
        time.sleep(min(timeout, 0.02))


@pytest.fixture
def counts(monkeypatch: pytest.MonkeyPatch, receiver: WebhookReceiver) -> Iterator[ScriptedRedis]:
    """The worker process the task reaches, its webhooks the receiver's; what it counts, in a scripted Redis."""
    counted = ScriptedRedis({"pubsub": lambda call: Quiet()})
    monkeypatch.setattr(redis_clients, "sync_client", lambda config, **options: counted)
    hooks = [{"url": receiver.url, "secret": SECRET, "name": "billing"}]
    settings = config(webhooks=json.dumps(hooks), webhook_allow_private=True, webhook_retry_hours=1, redis_prefix="p")
    WorkerTask.bind_worker(Worker(settings))
    yield counted
    WorkerTask.bind_worker(None)


def counted(fake: ScriptedRedis) -> list[str]:
    return [call.args[1] for call in fake.named("hincrby")]


def test_a_delivery_finds_its_endpoint_by_name_or_by_the_url_it_was_queued_with(
    counts: ScriptedRedis, receiver: WebhookReceiver
) -> None:
    found = event("job.succeeded", "j1")
    assert deliver({"endpoint": "billing", "event": found, "first_at": time.time()}) == {"status": 200, "tries": 1}
    assert deliver({"endpoint": receiver.url, "event": found}) == {"status": 200, "tries": 1}
    assert deliver({"endpoint": "gone", "event": found}) == {"dropped": True}
    assert len(receiver.received) == 2
    assert counted(counts) == [webhook_count_field("billing", "delivered")] * 2
    assert {call.args[0] for call in counts.named("hincrby")} == {"p:webhook-counts"}


def test_a_delivery_failing_past_the_retry_hours_gives_up_saying_how_long_it_tried(
    counts: ScriptedRedis, receiver: WebhookReceiver
) -> None:
    receiver.answers = [503, 503]
    found = event("job.failed", "j1")
    with pytest.raises(WebhookGaveUp, match=r"billing: answered 503; gave up after 1 tries over 1 h"):
        deliver({"endpoint": "billing", "event": found, "first_at": time.time() - 3601})
    assert counted(counts) == [webhook_count_field("billing", "failed_try"), webhook_count_field("billing", "gave_up")]
    with pytest.raises(Retry):  # within the hours: tried again later
        deliver({"endpoint": "billing", "event": found, "first_at": time.time()})
    assert counted(counts)[-1] == webhook_count_field("billing", "failed_try")
