"""One try of a webhook delivery: what it sends, and where it refuses to go."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
import standardwebhooks

from shared.config import Config
from shared.webhooks import Endpoint, event
from tasks.webhook_delivery import DeliveryFailed, send
from testing.fake_model_server import free_port
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
