"""Delivering webhooks: one task per event and endpoint, on the broker, retried with
exponential backoff until it is delivered or ``WEBHOOK_RETRY_HOURS`` have passed.

A try signs the event anew (Standard Webhooks: the same ``webhook-id``, a fresh
timestamp), connects to the address the endpoint's host was checked to resolve to
(private and loopback addresses refused unless ``WEBHOOK_ALLOW_PRIVATE``), follows
no redirect, and gives up on a receiver after ``WEBHOOK_TIMEOUT`` seconds, reading
at most 64 KiB of its answer. A 2xx answer delivers; anything else is tried again.
Each retry is a new message (Celery's ``retry``, with a countdown of at most
``WEBHOOK_MAX_BACKOFF`` seconds, below RabbitMQ's consumer timeout); the message is
acknowledged only once that one is queued, so a worker that dies loses no delivery.
A delivery that gives up fails with `WebhookGaveUp`: it is kept as a dead letter
(``python -m tasks.dead_letters replay`` tries it once more), and counted per endpoint
(``llm_api_webhook_deliveries`` at the API's ``/metrics``).

Jobs submitted without waiting send ``job.succeeded`` or ``job.failed`` here, once
their result is stored (``job.cancelled`` is sent by the API that cancelled them);
background responses, ``response.completed``, ``response.incomplete`` or
``response.failed`` (``response.cancelled`` by the API).
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from celery.signals import task_postrun

from shared.config import Config
from shared.contract import State, TaskName
from shared.contract.keys import webhook_count_field
from shared.webhooks import Endpoint, UnsafeUrl, dumps, emit, resolve, signed_headers, url_in_logs
from tasks.app import celery_app
from tasks.worker import Worker, WorkerTask

log = logging.getLogger(__name__)

MAX_ANSWER_BYTES = 65536
FIRST_BACKOFF = 5.0  # seconds before the second try; doubled each time, up to WEBHOOK_MAX_BACKOFF


class WebhookGaveUp(Exception):
    """A delivery still failing after WEBHOOK_RETRY_HOURS: kept as a dead letter."""


class DeliveryFailed(Exception):
    """One try failed; the message says why."""


# No result stored: nobody awaits a delivery (and a retry stores none either).
@celery_app.task(name=TaskName.WEBHOOK.value, bind=True, max_retries=None, ignore_result=True)
def deliver(self: WorkerTask, delivery: dict[str, Any]) -> dict[str, Any]:
    """Send ``delivery["event"]`` to the endpoint named ``delivery["endpoint"]``."""
    worker = self.worker
    config = worker.config
    named = str(delivery.get("endpoint"))
    # A delivery queued while endpoints were named by their whole URL finds its endpoint by it.
    endpoint = worker.webhooks.get(named) or next((e for e in worker.webhooks.values() if e.url == named), None)
    found = delivery.get("event") or {}
    if endpoint is None:
        log.warning("webhook endpoint %r is no longer configured: event %s dropped", url_in_logs(named),
                    found.get("id"))  # fmt: skip
        return {"dropped": True}
    tries = self.request.retries + 1
    try:
        status = send(config, endpoint, found)
    except DeliveryFailed as exc:
        _count(worker, endpoint, "failed_try")
        first = float(delivery.get("first_at") or time.time())
        if time.time() - first >= config.webhook_retry_hours * 3600:
            _count(worker, endpoint, "gave_up")
            raise WebhookGaveUp(
                f"event {found.get('id')} to {endpoint.name}: {exc}; gave up after {tries} tries"
                f" over {config.webhook_retry_hours:g} h (WEBHOOK_RETRY_HOURS)"
            ) from None
        wait = min(config.webhook_max_backoff, FIRST_BACKOFF * 2**self.request.retries)
        wait *= random.uniform(0.8, 1.0)  # not every delivery of an outage at once
        log.info("webhook %s to %s failed (try %d: %s): tried again in %.0fs", found.get("id"), endpoint.name,
                 tries, exc, wait)  # fmt: skip
        raise self.retry(countdown=wait) from None
    _count(worker, endpoint, "delivered")
    log.info("webhook %s (%s) delivered to %s: %d", found.get("id"), found.get("type"), endpoint.name, status)
    return {"status": status, "tries": tries}


def send(config: Config, endpoint: Endpoint, found: dict[str, Any]) -> int:
    """One try: the receiver's status (2xx), or DeliveryFailed saying why."""
    try:
        address = resolve(endpoint.url, config.webhook_allow_private)
    except UnsafeUrl as exc:
        raise DeliveryFailed(str(exc)) from None
    parts = urlsplit(endpoint.url)
    host = f"[{address}]" if ":" in address else address
    target = urlunsplit(parts._replace(netloc=f"{host}:{parts.port}" if parts.port else host))
    body = dumps(found)
    headers = {
        "content-type": "application/json",
        "user-agent": "llm-api-webhooks",
        "host": parts.netloc.rsplit("@", 1)[-1],
        **signed_headers(endpoint, found["id"], body),
    }
    extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
    deadline = time.monotonic() + config.webhook_timeout
    try:
        with (
            httpx.Client(timeout=config.webhook_timeout, follow_redirects=False, trust_env=False) as client,
            client.stream("POST", target, content=body, headers=headers, extensions=extensions) as answer,
        ):
            read = 0
            for chunk in answer.iter_raw():
                read += len(chunk)
                if read >= MAX_ANSWER_BYTES or time.monotonic() > deadline:
                    break  # the answer's status is what counts
    except httpx.HTTPError as exc:
        # What failed, named as the endpoint is: an error's text may hold the URL, its query's token too.
        said = str(exc)
        for url in (endpoint.url, target):
            said = said.replace(url, endpoint.name)
        raise DeliveryFailed(f"{type(exc).__name__}: {said}") from None
    if 300 <= answer.status_code < 400:
        raise DeliveryFailed(f"answered {answer.status_code}: redirects are not followed")
    if not 200 <= answer.status_code < 300:
        raise DeliveryFailed(f"answered {answer.status_code}")
    return answer.status_code


def _count(worker: Worker, endpoint: Endpoint, outcome: str) -> None:
    try:
        worker.running.redis.hincrby(worker.config.keys.webhook_counts, webhook_count_field(endpoint.name, outcome), 1)
    except Exception as exc:  # noqa: BLE001 - a count lost is not worth a delivery
        log.warning("could not count a webhook delivery: %s", exc)


@task_postrun.connect
def _job_ended(task: WorkerTask | None = None, task_id: str | None = None, args: Any = None, state: str | None = None,
               retval: Any = None, **_: Any) -> None:  # fmt: skip
    # After the result is stored: a receiver that asks GET /jobs/{id} at once finds it.
    job = args[0] if args and isinstance(args[0], dict) else None
    if task is None or job is None or not job.get("notify") or task_id is None:
        return
    if state not in (State.SUCCESS, State.FAILURE):
        return
    worker = task.worker
    object_id = task_id
    if job.get("response"):
        # A background response: OpenAI's events, about the response's id (not its tenant's key).
        finished = (retval.get("choices") or [{}])[0].get("finish_reason") if isinstance(retval, dict) else None
        kind = "response.failed" if state != State.SUCCESS else "response.incomplete" if finished == "length" else (
            "response.completed")  # fmt: skip
        object_id = task_id.rsplit("~", 1)[-1]
    else:
        kind = "job.succeeded" if state == State.SUCCESS else "job.failed"
    endpoints = [e for e in worker.webhooks.values() if kind in e.events]
    if not endpoints:
        return
    try:
        emit(celery_app, worker.config, endpoints, kind, object_id)
    except Exception:
        log.exception("could not queue the webhook %s of job %s", kind, task_id)
