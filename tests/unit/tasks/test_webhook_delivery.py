"""One try of a webhook delivery: what it sends, and where it refuses to go."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest

from shared.config import Config
from shared.webhooks import Endpoint, event
from tasks.webhook_delivery import DeliveryFailed, send
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
