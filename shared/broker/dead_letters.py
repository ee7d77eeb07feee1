"""Dead letters as an operator reads and replays them: the queue ``{QUEUE_NAME}.dead``
that workers keep failed jobs and messages no worker could process in
(tasks/dead_letters.py), listed, replayed and purged here for the command line
(``python -m tasks.dead_letters``) and the API (``GET /dead_letters``,
``POST /dead_letters/replay``, api/observability/dead_letters_router.py).

Replaying a job forgets its failure (result and lease), puts it back in the queue
under the same job_id, and removes its dead letter; ``GET /jobs/{id}`` then shows
it queued, and its new result when it has run. A dead job whose stored result is an
answer or a cancellation is skipped, named with why, and its dead letter removed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import redis
from kombu import Connection, Exchange, Message, Queue

from shared.broker.queues import queue_arguments
from shared.broker.settings import celery_settings
from shared.config import Config
from shared.contract import JobField, State, kept_claim
from shared.storage import redis_clients

REASON = "x-dead-reason"
DEAD_AT = "x-dead-at"


def dead_letter_queue(config: Config) -> Queue:
    """The dead-letter queue: durable; on RabbitMQ it keeps the newest DEAD_LETTER_MAX."""
    name = config.dead_letter_queue
    arguments = None
    if config.uses_rabbitmq:
        arguments = {**(queue_arguments(config, priorities=False) or {}),
                     "x-max-length": config.dead_letter_max, "x-overflow": "drop-head"}  # fmt: skip
    return Queue(
        name, Exchange(name, type="direct", durable=True), routing_key=name, durable=True, queue_arguments=arguments
    )


def settled_as(store: redis.Redis, config: Config, job_id: str) -> str | None:
    """ "answered" or "cancelled" when the job's stored result is an answer or a
    cancellation (it must not run again); None when it has none, or a failure."""
    raw = store.get(config.keys.result(job_id))
    if raw is None:
        return None
    try:
        status = json.loads(raw).get("status")
    except (ValueError, AttributeError):
        return None
    return {State.SUCCESS: "answered", State.REVOKED: "cancelled"}.get(status)


def _kept_claim(store: redis.Redis, config: Config, job_id: str) -> dict[str, str]:
    """What a job's stored result keeps of its claim ({} when none)."""
    raw = store.get(config.keys.result(job_id))
    try:
        return kept_claim(json.loads(raw)) if raw is not None else {}
    except ValueError:
        return {}


@contextmanager
def _dead_messages(config: Config, limit: int | None) -> Iterator[tuple[Connection, list[Message]]]:
    """Take up to `limit` dead letters without acknowledging them; those not acknowledged
    or removed in the block go back to the queue."""
    settings = celery_settings(config)
    queue = dead_letter_queue(config)
    with Connection(config.broker_url, transport_options=settings["broker_transport_options"]) as connection:
        bound = queue(connection.default_channel)
        bound.declare()
        messages: list[Message] = []
        while limit is None or len(messages) < limit:
            message = bound.get(no_ack=False, accept=None)
            if message is None:
                break
            messages.append(message)
        try:
            yield connection, messages
        finally:
            for message in messages:
                if not message.acknowledged:
                    message.requeue()


def describe(message: Message) -> dict[str, Any]:
    """What a dead letter says: job, task, why, when."""
    headers = message.headers or {}
    dead_at = headers.get(DEAD_AT)
    return {
        "job_id": headers.get("id"),
        "task": headers.get("task"),
        "reason": headers.get(REASON),
        "dead_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(dead_at))) if dead_at else None,
        "args": headers.get("argsrepr"),
    }


def list_dead(config: Config, limit: int | None = 100) -> list[dict[str, Any]]:
    with _dead_messages(config, limit) as (_, messages):
        return [describe(message) for message in messages]


@dataclass
class Replayed:
    """What a replay did: the jobs queued again, and those skipped with why."""

    replayed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def replay(config: Config, job_ids: set[str] | None) -> Replayed:
    """Put the dead jobs named (all when None) back in the queue, but those answered
    or cancelled since they failed: their dead letters are removed, nothing runs."""
    store = redis_clients.sync_client(config, socket_connect_timeout=config.redis_connect_timeout)
    settings = celery_settings(config)
    # The default model's queue (with quorum queues, its default priority's band).
    main = next(queue for queue in settings["task_queues"] if queue.name == settings["task_default_queue"])
    done = Replayed()
    with _dead_messages(config, None) as (connection, messages):
        producer = connection.Producer()
        for message in messages:
            job_id = (message.headers or {}).get("id")
            if not job_id or (job_ids is not None and job_id not in job_ids):
                continue
            settled = settled_as(store, config, job_id)
            if settled is not None:
                done.skipped[job_id] = f"{settled} since it failed: its result stays, its dead letter is removed"
                message.ack()
                continue
            # Forget the failure, or the worker would find the job answered; its claim,
            # kept in the failure (STORE_ONCE), is its hash again (a resubmission of
            # another body under its job_id is still refused, its status still its tenant's).
            now = time.time()
            claim = _kept_claim(store, config, job_id)
            pipe = store.pipeline()
            pipe.delete(config.keys.result(job_id), config.keys.lease(job_id))
            if claim:
                pipe.hset(config.keys.job(job_id), mapping=claim)
            pipe.hdel(config.keys.job(job_id), JobField.STARTED_AT)
            pipe.hset(config.keys.job(job_id), JobField.ACCEPTED_AT, repr(now))
            pipe.expire(config.keys.job(job_id), config.job_ttl)
            pipe.zadd(config.keys.queued, {job_id: now})
            pipe.execute()
            headers = {k: v for k, v in (message.headers or {}).items() if k not in (REASON, DEAD_AT)}
            producer.publish(
                message.body,
                exchange=main.exchange,
                routing_key=main.routing_key,
                declare=[main],
                headers=headers,
                content_type=message.content_type,
                content_encoding=message.content_encoding,
                delivery_mode="persistent",
            )
            message.ack()
            done.replayed.append(job_id)
    store.close()
    return done


def purge(config: Config) -> int:
    settings = celery_settings(config)
    with Connection(config.broker_url, transport_options=settings["broker_transport_options"]) as connection:
        bound = dead_letter_queue(config)(connection.default_channel)
        bound.declare()
        return int(bound.purge() or 0)
