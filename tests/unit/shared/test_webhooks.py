"""Webhooks: endpoints as configured (and refused), events and their Standard Webhooks
signatures (checked with OpenAI's SDK and the `standardwebhooks` library), and the
addresses a webhook must never reach."""

from __future__ import annotations

import base64
import ipaddress
import json
import re
from pathlib import Path
from typing import Any

import openai
import pytest
import standardwebhooks

from shared.config import Config
from shared.webhooks import (
    EVENT_TYPES,
    Endpoint,
    UnsafeUrl,
    WebhookConfigError,
    dumps,
    embedded_ipv4,
    emit,
    event,
    load_endpoints,
    resolve,
    signed_headers,
    url_in_logs,
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


def test_endpoints_from_a_yaml_file_take_every_event_unless_they_name_theirs(tmp_path: Path) -> None:
    hooks = tmp_path / "webhooks.yaml"
    hooks.write_text(
        "endpoints:\n"
        f"  - url: https://hooks.example.com/all?token=abc\n    secret: {SECRET}\n"
        f"  - url: https://hooks.example.com/jobs\n    secret: {SECRET}\n    name: jobs\n"
        "    events: [job.succeeded, job.failed]\n"
    )
    every, jobs = load_endpoints(config(webhooks_file=str(hooks)))
    assert every.name == "https://hooks.example.com/all" and every.events == EVENT_TYPES  # no token in its name
    assert jobs.name == "jobs" and jobs.events == {"job.succeeded", "job.failed"}
    assert every.key == b"0123456789abcdef0123456789abcdef"
    assert load_endpoints(config()) == []


def test_two_endpoints_of_one_name_are_refused() -> None:
    same = [{"url": "https://h.example.com/x?token=1", "secret": SECRET}, {"url": "https://h.example.com/x?token=2",
                                                                           "secret": SECRET}]  # fmt: skip
    with pytest.raises(WebhookConfigError, match="same name"):
        load_endpoints(config(webhooks=json.dumps(same)))
    with pytest.raises(WebhookConfigError, match="a list of endpoints"):
        load_endpoints(config(webhooks=json.dumps({"url": "https://h.example.com"})))


def test_a_url_in_logs_keeps_no_user_password_query_or_fragment() -> None:
    assert url_in_logs("https://u:p@hooks.example.com:8443/in?token=s3cret#x") == "https://hooks.example.com:8443/in"


def test_an_ipv6_address_carrying_an_ipv4_one_is_read_as_it() -> None:
    carried = {
        "::ffff:10.0.0.1": "10.0.0.1",
        "64:ff9b::a9fe:a9fe": "169.254.169.254",
        "2002:c0a8:7::": "192.168.0.7",
        "::7f00:1": "127.0.0.1",
    }
    for address, ipv4 in carried.items():
        assert str(embedded_ipv4(ipaddress.IPv6Address(address))) == ipv4
    assert embedded_ipv4(ipaddress.IPv6Address("::1")) is None
    assert embedded_ipv4(ipaddress.IPv6Address("2606:4700::1111")) is None


class App:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send_task(self, name: str, **options: Any) -> None:
        self.sent.append({"name": name, **options})


def test_an_event_is_queued_for_each_endpoint_taking_it_with_one_task_id_per_endpoint() -> None:
    app = App()
    endpoints = [endpoint("https://a.example.com"), endpoint("https://b.example.com", frozenset({"job.failed"})),
                 endpoint("https://c.example.com", frozenset({"batch.completed", "job.failed"}))]  # fmt: skip
    assert emit(app, config(), endpoints, "batch.completed", "batch_1") == 2
    assert [task["args"][0]["endpoint"] for task in app.sent] == ["https://a.example.com", "https://c.example.com"]
    assert {task["name"] for task in app.sent} == {"webhook.deliver"}
    assert {task["queue"] for task in app.sent} == {"llm-api-queue.webhooks"}
    again = App()
    emit(again, config(), endpoints, "batch.completed", "batch_1")
    # The same event and endpoint: the same task id (and event id), queued twice or not.
    assert [task["task_id"] for task in again.sent] == [task["task_id"] for task in app.sent]
    assert len({task["task_id"] for task in app.sent}) == 2
    assert app.sent[0]["args"][0]["event"]["id"] == event("batch.completed", "batch_1")["id"]
