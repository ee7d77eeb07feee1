"""Webhooks: endpoints as configured (and refused), events and their Standard Webhooks
signatures (checked with OpenAI's SDK and the `standardwebhooks` library), and the
addresses a webhook must never reach."""

from __future__ import annotations

import base64
import ipaddress
import json
import re
from typing import Any

import openai
import pytest
import standardwebhooks

from shared.config import Config
from shared.webhooks import (
    Endpoint,
    UnsafeUrl,
    WebhookConfigError,
    dumps,
    event,
    load_endpoints,
    resolve,
    signed_headers,
)

pytestmark = pytest.mark.unit

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def config(**settings: Any) -> Config:
    return Config(_env_file=None, **settings)  # type: ignore[call-arg]


def endpoint(url: str = "https://hooks.example.com/x", events: frozenset[str] | None = None) -> Endpoint:
    return Endpoint(url, url, SECRET, events or frozenset({"batch.completed"}))


def test_a_signed_event_is_accepted_by_openais_sdk_and_standardwebhooks() -> None:
    found = event("batch.completed", "batch_abc")
    body = dumps(found)
    headers = signed_headers(endpoint(), found["id"], body)
    unwrapped = openai.OpenAI(api_key="unused").webhooks.unwrap(body, headers, secret=SECRET)
    assert unwrapped.type == "batch.completed" and unwrapped.data.id == "batch_abc"
    assert standardwebhooks.Webhook(SECRET).verify(body, headers)["data"] == {"id": "batch_abc"}
    # Tampered with, or signed with another secret: refused by both.
    other = "whsec_" + base64.b64encode(b"another secret of 32 bytes......").decode()
    for data, secret in ((body.replace(b"abc", b"abd"), SECRET), (body, other)):
        with pytest.raises(openai.InvalidWebhookSignatureError):
            openai.OpenAI(api_key="unused").webhooks.unwrap(data, headers, secret=secret)
        with pytest.raises(standardwebhooks.WebhookVerificationError):
            standardwebhooks.Webhook(secret).verify(data, headers)


def test_an_events_id_is_the_same_for_the_same_event() -> None:
    assert event("batch.completed", "batch_1")["id"] == event("batch.completed", "batch_1", 0)["id"]
    assert event("batch.completed", "batch_1")["id"] != event("batch.failed", "batch_1")["id"]


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ({"url": "ftp://x/y", "secret": SECRET}, "url must be an http(s) URL"),
        ({"url": "https://x/y", "secret": "plain"}, "whsec_"),
        ({"url": "https://x/y", "secret": "whsec_!!!"}, "not base64"),
        ({"url": "https://x/y", "secret": SECRET, "events": ["batch.done"]}, "unknown events"),
        ({"url": "http://127.0.0.1:9/y", "secret": SECRET}, "private or loopback"),
        ({"url": "http://[::1]/y", "secret": SECRET}, "private or loopback"),
        # A password in the URL would be shown wherever the endpoint is named, and is never sent.
        ({"url": "https://user:hunter2@hooks.example.com/y", "secret": SECRET}, "user or password"),
        ({"url": "https://token@hooks.example.com/y", "secret": SECRET}, "user or password"),
        # IPv6 forms carrying a private IPv4 address are judged by it.
        ({"url": "http://[64:ff9b::a9fe:a9fe]/y", "secret": SECRET}, "private or loopback"),
        ({"url": "http://[::ffff:0:7f00:1]/y", "secret": SECRET}, "private or loopback"),
        ({"url": "http://[2002:7f00:1::]/y", "secret": SECRET}, "private or loopback"),
        ({"url": "http://[::7f00:1]/y", "secret": SECRET}, "private or loopback"),
    ],
)
def test_a_misconfigured_endpoint_stops_the_start(entry: dict[str, Any], why: str) -> None:
    with pytest.raises(WebhookConfigError, match=re.escape(why)):
        load_endpoints(config(webhooks=json.dumps([entry])))


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://localhost:8080/x",
        "http://10.1.2.3/x",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/x",
        "http://192.168.0.7/x",
        "http://[64:ff9b::a9fe:a9fe]/x",  # NAT64 of 169.254.169.254
        "http://[::ffff:0:7f00:1]/x",  # IPv4-translated 127.0.0.1
        "http://[::ffff:10.1.2.3]/x",  # IPv4-mapped
        "http://[2002:c0a8:7::]/x",  # 6to4 of 192.168.0.7
        "http://[::7f00:1]/x",  # IPv4-compatible 127.0.0.1
    ],
)
def test_private_and_loopback_addresses_are_refused(url: str) -> None:
    with pytest.raises(UnsafeUrl, match="WEBHOOK_ALLOW_PRIVATE"):
        resolve(url, allow_private=False)
    assert resolve(url, allow_private=True)


@pytest.mark.parametrize("address", ["64:ff9b::808:808", "2002:808:808::", "::ffff:8.8.8.8", "2606:4700::1111"])
def test_ipv6_forms_of_a_public_address_are_allowed(address: str) -> None:
    assert ipaddress.ip_address(resolve(f"http://[{address}]/x", allow_private=False)) == ipaddress.ip_address(address)


def test_a_misconfigured_endpoint_stops_the_api_and_the_worker() -> None:
    from api.main import create_app
    from tasks.worker import Worker

    wrong = config(webhooks=json.dumps([{"url": "https://x/y", "secret": "not-a-whsec"}]))
    with pytest.raises(WebhookConfigError):
        create_app(wrong)
    with pytest.raises(WebhookConfigError):
        Worker(wrong)
