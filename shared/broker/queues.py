"""The broker's queues as the API and the workers declare them, by RABBIT_MQ_QUEUE_TYPE.

- ``classic`` (the default): one RabbitMQ node's queues, each a priority queue
  (``x-max-priority``): a waiting job of priority 9 is handed out before those of lower ones.
- ``quorum``: RabbitMQ's replicated queues (Raft, on every node of the cluster): a
  message confirmed to the API is on a majority of nodes, and survives any one. On
  RabbitMQ 3.10 they have no priorities, so each model has three *bands*, each its own
  queue: ``{queue}.high`` (priorities 7-9), ``{queue}`` (4-6, the default 5 among them)
  and ``{queue}.low`` (0-3, batches). Workers consume all three, and start the jobs
  they hold highest priority first (tasks/broker/band_pool.py).

On the Redis broker (no RABBIT_MQ_HOST) a queue is a list per priority (Kombu's
``priority_steps``): see shared/broker/settings.py.
"""

from __future__ import annotations

from typing import Any

from kombu import Exchange, Queue

from shared.config import Config

MAX_PRIORITY = 10  # job priorities are 0 to 9
HIGH, LOW = ".high", ".low"
HIGH_FROM, LOW_UP_TO = 7, 3  # priorities 7-9 are the high band, 0-3 the low one


def queue_arguments(config: Config, priorities: bool = True) -> dict[str, Any] | None:
    """The arguments a queue is declared with (a queue of jobs with `priorities`)."""
    if not config.uses_rabbitmq:
        return None
    if config.quorum_queues:
        return {"x-queue-type": "quorum"}
    return {"x-max-priority": MAX_PRIORITY} if priorities else None


def declared(name: str, config: Config, consumer_arguments: dict[str, Any] | None = None) -> Queue:
    """A queue of jobs as declared: durable, with its direct exchange of the same name."""
    return Queue(
        name,
        # With quorum queues, a topic exchange (matching the queue's name only): Celery's
        # native delayed delivery, which quorum queues need for a countdown (a webhook
        # delivery's next try), routes only through topic exchanges.
        Exchange(name, type="topic" if config.quorum_queues else "direct", durable=True),
        routing_key=name,
        durable=True,
        queue_arguments=queue_arguments(config),
        consumer_arguments=consumer_arguments,
    )


def band_queue(config: Config, queue: str, priority: int | None) -> str:
    """The queue a job of `priority` (0-9; None: the default) waits in: `queue` itself,
    or with quorum queues, its priority's band of `queue`."""
    if not config.quorum_queues or priority is None:
        return queue
    if priority >= HIGH_FROM:
        return queue + HIGH
    return queue + LOW if priority <= LOW_UP_TO else queue


BANDS = ("high", "normal", "low")  # the bands' names, highest first


def band_of(priority: int | None) -> str:
    """The name of the band of `priority` (0-9; None: the default, 5): high, normal or low.
    The same bands on every broker, whether its queues have them or not."""
    if priority is None:
        return "normal"
    return "high" if priority >= HIGH_FROM else "low" if priority <= LOW_UP_TO else "normal"


def bands(config: Config, queue: str) -> list[str]:
    """Every queue jobs of `queue` wait in, highest band first (`queue` alone but with quorum queues)."""
    return [queue + HIGH, queue, queue + LOW] if config.quorum_queues else [queue]


def model_queue(name: str) -> str:
    """The model's queue of a band's queue (the name itself for any other queue)."""
    for suffix in (HIGH, LOW):
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name
