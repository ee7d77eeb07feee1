"""Webhooks: signed as Standard Webhooks says (checked with OpenAI's SDK and the
`standardwebhooks` library), sent for batches and for jobs submitted without waiting,
delivered at least once across a receiver's outage with the same webhook-id, given
up visibly, and never sent where they must not go."""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
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
from tasks import dead_letters
from tasks.webhook_delivery import DeliveryFailed, send
from testing.fake_model_server import FakeModelServer
from testing.load import wait_until
from testing.metrics import samples, value
from testing.openai_sdk import chat_line, client, upload, wait_until_finished
from testing.webhook_receiver import Received, WebhookReceiver
from tests.conftest import StackFactory

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def config(**settings: Any) -> Config:
    return Config(_env_file=None, **settings)  # type: ignore[call-arg]


def endpoint(url: str = "https://hooks.example.com/x", events: frozenset[str] | None = None) -> Endpoint:
    return Endpoint(url, url, SECRET, events or frozenset({"batch.completed"}))


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver().start()
    yield server
    server.stop()


def verified(received: Received) -> dict[str, Any]:
    """The event, once both OpenAI's SDK and the standardwebhooks library accept its signature."""
    unwrapped = openai.OpenAI(api_key="unused").webhooks.unwrap(received.body, received.headers, secret=SECRET)
    checked = standardwebhooks.Webhook(SECRET).verify(received.body, received.headers)
    assert checked == json.loads(received.body) and unwrapped.id == checked["id"]
    return checked


@pytest.mark.unit
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


@pytest.mark.unit
def test_an_events_id_is_the_same_for_the_same_event() -> None:
    assert event("batch.completed", "batch_1")["id"] == event("batch.completed", "batch_1", 0)["id"]
    assert event("batch.completed", "batch_1")["id"] != event("batch.failed", "batch_1")["id"]


@pytest.mark.unit
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


@pytest.mark.unit
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


@pytest.mark.unit
@pytest.mark.parametrize("address", ["64:ff9b::808:808", "2002:808:808::", "::ffff:8.8.8.8", "2606:4700::1111"])
def test_ipv6_forms_of_a_public_address_are_allowed(address: str) -> None:
    assert ipaddress.ip_address(resolve(f"http://[{address}]/x", allow_private=False)) == ipaddress.ip_address(address)


@pytest.mark.unit
def test_a_redirect_is_not_followed(receiver: WebhookReceiver) -> None:
    receiver.redirect_to = "http://169.254.169.254/latest/meta-data"
    found = event("batch.completed", "batch_1")
    with pytest.raises(DeliveryFailed, match="redirects are not followed"):
        send(config(webhook_allow_private=True), endpoint(receiver.url), found)
    assert len(receiver.received) == 1  # and nothing else was asked
    with pytest.raises(DeliveryFailed, match="WEBHOOK_ALLOW_PRIVATE"):
        send(config(), endpoint(receiver.url), found)
    assert len(receiver.received) == 1


def webhook_env(receiver: WebhookReceiver, events: list[str] | None = None, **more: str) -> dict[str, str]:
    hooks = [{"url": receiver.url, "secret": SECRET, **({"events": events} if events else {})}]
    return {"WEBHOOKS": json.dumps(hooks), "WEBHOOK_ALLOW_PRIVATE": "true", **more}


@pytest.mark.integration
def test_a_finished_batch_sends_its_signed_event(
    make_stack: StackFactory, fake: FakeModelServer, receiver: WebhookReceiver
) -> None:
    stack = make_stack(**webhook_env(receiver, ["batch.completed", "batch.failed"]))
    sdk = client(stack)
    batch = sdk.batches.create(input_file_id=upload(sdk, [chat_line("a", "b")]), endpoint="/v1/chat/completions",
                               completion_window="24h")  # fmt: skip
    assert wait_until_finished(sdk, batch.id).status == "completed"
    (delivery,) = receiver.wait_for(1, "batch.completed")
    found = verified(delivery)
    assert found["type"] == "batch.completed" and found["data"] == {"id": batch.id} and found["object"] == "event"
    assert delivery.headers["webhook-id"] == found["id"]


@pytest.mark.integration
def test_jobs_submitted_without_waiting_send_their_end(
    make_stack: StackFactory, fake: FakeModelServer, receiver: WebhookReceiver
) -> None:
    stack = make_stack(**webhook_env(receiver))
    fake.strict_models = True
    accepted = [
        httpx.post(f"{stack.url}/generate?wait=0", json={"job_id": "ok-1", "content": "hi"}),
        httpx.post(f"{stack.url}/generate", headers={"Prefer": "respond-async"},
                   json={"job_id": "bad-1", "content": "hi", "meta": {"model": "nope"}}),
    ]  # fmt: skip
    assert [answer.status_code for answer in accepted] == [202, 202]
    (succeeded,) = receiver.wait_for(1, "job.succeeded")
    (failed,) = receiver.wait_for(1, "job.failed")
    assert verified(succeeded)["data"] == {"id": "ok-1"} and verified(failed)["data"] == {"id": "bad-1"}
    # The result is stored before the event is sent.
    assert httpx.get(f"{stack.url}/jobs/ok-1").json()["status"] == "succeeded"
    fake.chunk_delay, fake.extra_words = 0.05, 400  # a 20 s answer
    assert httpx.post(f"{stack.url}/generate?wait=0", json={"job_id": "gone-1", "content": "x"}).status_code == 202
    deadline = time.monotonic() + 10
    while fake.in_flight == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert httpx.delete(f"{stack.url}/jobs/gone-1").status_code == 200
    (cancelled,) = receiver.wait_for(1, "job.cancelled")
    assert verified(cancelled)["data"] == {"id": "gone-1"}
    fake.chunk_delay, fake.extra_words = 0, 0
    # A request that waits for its answer sends no event.
    assert httpx.post(f"{stack.url}/generate", json={"job_id": "sync-1", "content": "x", "meta": {"model": "nope"}},
                      timeout=30).status_code == 404  # fmt: skip
    time.sleep(1)
    assert not any(b'"sync-1"' in r.body for r in receiver.received)


@pytest.mark.integration
def test_a_receiver_that_is_down_gets_the_event_with_the_same_id(
    make_stack: StackFactory, fake: FakeModelServer, receiver: WebhookReceiver
) -> None:
    receiver.answers = [503, 502, 500]
    stack = make_stack(**webhook_env(receiver, WEBHOOK_MAX_BACKOFF="0.5"))
    assert httpx.post(f"{stack.url}/generate?wait=0", json={"job_id": "j-1", "content": "x"}).status_code == 202
    (delivered,) = receiver.wait_for(1, "job.succeeded")
    tries = [r for r in receiver.received if b'"j-1"' in r.body]
    assert [r.status for r in tries] == [503, 502, 500, 200]
    assert {r.headers["webhook-id"] for r in tries} == {verified(delivered)["id"]}
    assert value(samples(stack.url), "llm_api_webhook_deliveries_total", endpoint=receiver.url,
                 outcome="failed_try") == 3  # fmt: skip


@pytest.mark.integration
def test_a_token_in_an_endpoints_query_is_never_logged(
    make_stack: StackFactory, fake: FakeModelServer, receiver: WebhookReceiver, broker_env: dict[str, str]
) -> None:
    if not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("once is enough: what is logged of an endpoint does not depend on the broker")
    receiver.answers = [503]  # a failed try is logged too
    hooks = [{"url": f"{receiver.url}?token=hook-s3cret", "secret": SECRET}]
    stack = make_stack(WEBHOOKS=json.dumps(hooks), WEBHOOK_ALLOW_PRIVATE="true", WEBHOOK_MAX_BACKOFF="0.5")
    assert httpx.post(f"{stack.url}/generate?wait=0", json={"job_id": "q-1", "content": "x"}).status_code == 202
    (delivered,) = receiver.wait_for(1, "job.succeeded")
    assert verified(delivered)["data"] == {"id": "q-1"}
    worker = stack.processes.started[0].output()
    assert "failed (try 1: answered 503)" in worker and f"delivered to {receiver.url}:" in worker
    logs = "".join(process.output() for process in stack.processes.started)
    assert "hook-s3cret" not in logs and "hook-s3cret" not in httpx.get(f"{stack.url}/metrics").text


@pytest.mark.integration
def test_a_receiver_that_is_not_even_listening_gets_the_event_once_it_is_back(
    make_stack: StackFactory, fake: FakeModelServer, receiver: WebhookReceiver
) -> None:
    stack = make_stack(**webhook_env(receiver, WEBHOOK_MAX_BACKOFF="0.5"))
    receiver.stop()  # connections refused
    assert httpx.post(f"{stack.url}/generate?wait=0", json={"job_id": "j-3", "content": "x"}).status_code == 202
    wait_until(lambda: value(samples(stack.url), "llm_api_webhook_deliveries_total", endpoint=receiver.url,
                             outcome="failed_try") >= 3, 30, "tries refused")  # fmt: skip
    receiver.start()
    (delivered,) = receiver.wait_for(1, "job.succeeded")
    assert verified(delivered)["data"] == {"id": "j-3"}


@pytest.mark.integration
def test_a_delivery_that_gives_up_is_counted_and_kept_as_a_dead_letter(
    make_stack: StackFactory, fake: FakeModelServer, receiver: WebhookReceiver
) -> None:
    receiver.answers = [500] * 1000
    stack = make_stack(**webhook_env(receiver, WEBHOOK_MAX_BACKOFF="0.3", WEBHOOK_RETRY_HOURS="0.0005"))
    assert httpx.post(f"{stack.url}/generate?wait=0", json={"job_id": "j-2", "content": "x"}).status_code == 202
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if value(samples(stack.url), "llm_api_webhook_deliveries_total", endpoint=receiver.url, outcome="gave_up"):
            break
        time.sleep(0.2)
    found = samples(stack.url)
    assert value(found, "llm_api_webhook_deliveries_total", endpoint=receiver.url, outcome="gave_up") == 1
    assert value(found, "llm_api_webhook_deliveries_total", endpoint=receiver.url, outcome="delivered") == 0
    dead = []
    while time.monotonic() < deadline and not dead:
        dead = [d for d in dead_letters.list_dead(stack.config) if d.get("task") == "webhook.deliver"]
        time.sleep(0.2)
    assert dead and "gave up after" in dead[0]["reason"], dead
    assert os.environ.get("WEBHOOKS") is None  # the test's endpoints never leak into the environment


@pytest.mark.unit
def test_a_misconfigured_endpoint_stops_the_worker() -> None:
    # The API's half: tests/unit/api/test_main.py.
    from tasks.worker import Worker

    wrong = config(webhooks=json.dumps([{"url": "https://x/y", "secret": "not-a-whsec"}]))
    with pytest.raises(WebhookConfigError):
        Worker(wrong)


@pytest.mark.integration
def test_background_responses_send_openais_response_events(
    make_stack: StackFactory, fake: FakeModelServer, receiver: WebhookReceiver
) -> None:
    stack = make_stack(**webhook_env(receiver, ["response.completed", "response.failed", "response.cancelled"]))
    sdk = openai.OpenAI(base_url=f"{stack.url}/v1", api_key="unused", max_retries=0, _strict_response_validation=True)
    done = sdk.responses.create(model="fake-model", input="hi", background=True)
    (completed,) = receiver.wait_for(1, "response.completed")
    assert verified(completed)["data"] == {"id": done.id}
    assert sdk.responses.retrieve(done.id).status == "completed"  # stored before the event is sent
    fake.strict_models = True
    failed = sdk.responses.create(model="gpt-nope", input="hi", background=True)
    (failure,) = receiver.wait_for(1, "response.failed")
    assert verified(failure)["data"] == {"id": failed.id}
    fake.strict_models = False
    fake.chunk_delay, fake.extra_words = 0.05, 400  # a 20 s answer
    long = sdk.responses.create(model="fake-model", input="long", background=True)
    wait_until(lambda: fake.in_flight == 1, 10, "the long response to run")
    assert sdk.responses.cancel(long.id).status == "cancelled"
    (cancelled,) = receiver.wait_for(1, "response.cancelled")
    assert verified(cancelled)["data"] == {"id": long.id}
    # A response answered while its client waits sends none, nor does a job.
    sdk.responses.create(model="fake-model", input="sync")
    httpx.post(f"{stack.url}/generate?wait=0", json={"job_id": "plain", "content": "x"})
    time.sleep(1)
    assert len(receiver.received) == 3
