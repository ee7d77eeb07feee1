"""Webhooks: signed as Standard Webhooks says (checked with OpenAI's SDK and the
`standardwebhooks` library), sent for batches and for jobs submitted without waiting,
delivered at least once across a receiver's outage with the same webhook-id, given
up visibly, and never sent where they must not go."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
import standardwebhooks

from tasks import dead_letters
from testing.fake_model_server import FakeModelServer
from testing.load import wait_until
from testing.metrics import samples, value
from testing.openai_sdk import chat_line, client, upload, wait_until_finished
from testing.webhook_receiver import Received, WebhookReceiver
from tests.conftest import StackFactory

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


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
    # One streamed as it is made is a background response all the same.
    streamed = list(sdk.responses.create(model="fake-model", input="hi", background=True, stream=True))
    assert streamed[-1].type == "response.completed"
    assert verified(receiver.wait_for(2, "response.completed")[1])["data"] == {"id": streamed[-1].response.id}
    fake.strict_models = True
    failed = sdk.responses.create(model="gpt-nope", input="hi", background=True)
    (failure,) = receiver.wait_for(1, "response.failed")
    assert verified(failure)["data"] == {"id": failed.id}
    fake.strict_models = False
    fake.chunk_delay, fake.extra_words = 0.05, 400  # a 20 s answer
    long = sdk.responses.create(model="fake-model", input="long", background=True)
    # Running once its call reached the model server (not fake.in_flight: a call of an
    # earlier test may still be counted out of it after the reset between tests).
    wait_until(lambda: any("long" in json.dumps(body) for body in fake.completions), 30, "the long response to run")
    assert sdk.responses.cancel(long.id).status == "cancelled"
    (cancelled,) = receiver.wait_for(1, "response.cancelled")
    assert verified(cancelled)["data"] == {"id": long.id}
    # A response answered while its client waits sends none, nor does a job.
    sdk.responses.create(model="fake-model", input="sync")
    httpx.post(f"{stack.url}/generate?wait=0", json={"job_id": "plain", "content": "x"})
    time.sleep(1)
    assert len(receiver.received) == 4
