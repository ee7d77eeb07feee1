"""Celery's settings, the same for the API (which publishes) and the workers (which
consume). The workers' own classes (result backend, consumer, pool) are added by
tasks/settings.py, which celeryconfig.py reads."""

from __future__ import annotations

from typing import Any

from shared.broker import redis_transport
from shared.broker.queues import MAX_PRIORITY, bands, declared
from shared.config import Config
from shared.registry import load_registry

__all__ = ["MAX_PRIORITY", "celery_settings", "priority_for"]


def priority_for(config: Config, priority: int) -> int:
    """The broker's message priority for a job's (0 batch .. 9 most urgent): RabbitMQ
    delivers higher numbers first, Kombu's Redis transport lower ones."""
    return priority if config.uses_rabbitmq else MAX_PRIORITY - 1 - priority


def celery_settings(config: Config) -> dict[str, Any]:
    """Celery's lowercase settings for `config`, shared by the API and the workers."""
    registry = load_registry(config)
    queue = registry.default.queue
    broker_options: dict[str, Any] = {}
    consumer_arguments = None
    if config.uses_rabbitmq:
        # Priority queues, or quorum queues in priority bands (shared/broker/queues.py).
        # RabbitMQ (3.12 and later) closes the channel of a consumer that holds a message
        # longer than its consumer timeout (30 min by default), and hands the message out
        # again: give this queue's consumers more than the longest job. Older servers
        # ignore the argument; the job lease keeps a second run from starting there.
        # A webhook delivery waiting for its next try is held too (WEBHOOK_MAX_BACKOFF).
        held = max(config.longest_job, config.webhook_max_backoff)
        consumer_arguments = {"x-consumer-timeout": int(held * 2 * 1000)}
    else:
        # A Redis broker hands an unacknowledged message out again once it is older than
        # the visibility timeout. Workers renew the messages they hold (tasks/running.py),
        # so that is the job lease, not the length of the longest job: a dead worker's
        # jobs run again within about a lease, a long job is never handed out twice.
        broker_options = {
            "visibility_timeout": config.job_lease,
            "unacked_restore_interval": max(1, config.job_lease // 3),
            "unacked_restore_throttle": 1,
            "global_keyprefix": config.key_prefix,
            # A list per priority, read in order (on Redis, 0 is read first: see priority_for).
            "priority_steps": list(range(MAX_PRIORITY)),
            "queue_order_strategy": "priority",
            "sep": ":",
        }
    return {
        "broker_url": config.broker_url,
        # On Redis, Kombu's transport with one client per channel (shared/broker/redis_transport.py);
        # by name, as settings travel as JSON (`celery inspect conf`, Flower).
        "broker_transport": None if config.uses_rabbitmq else f"{redis_transport.__name__}:Transport",
        "broker_connection_timeout": config.broker_connect_timeout,
        # RabbitMQ hands a worker's unacknowledged jobs to another once it counts the
        # worker gone: a dead host's or a cut-off one's, after this much silence.
        "broker_heartbeat": config.broker_heartbeat,
        "broker_connection_retry_on_startup": True,
        "broker_pool_limit": config.publish_threads,
        "broker_transport_options": broker_options,
        "result_backend_transport_options": {"global_keyprefix": config.key_prefix},
        "redis_socket_connect_timeout": config.redis_connect_timeout,
        "result_expires": config.result_ttl,
        "usage_days": config.usage_days,  # the result store's (tasks/result_store.py)
        # The model a job without a route ran on (the one model without a registry): its
        # usage is counted to it, not to a name the client made up.
        "usage_default_model": registry.default.name,
        # Each model's prices (USD per million input, cached input and output tokens; None:
        # input's): the result store counts each answer's cost with its tokens.
        "usage_prices": {
            model.name: [model.prices.input, model.prices.cached_input, model.prices.output]
            for model in registry.models
            if not model.prices.free
        },
        "result_extended": True,
        "task_default_queue": queue,
        "task_default_exchange": queue,
        "task_default_routing_key": queue,
        # The queues of the models this process serves: all of them for the API (it
        # publishes to each), those of WORKER_MODELS for a worker started with it; and
        # the webhook deliveries' queue.
        "task_queues": tuple(
            declared(name, config, consumer_arguments)
            # Webhook deliveries: on every worker, whatever its models.
            for name in [
                *(band for queue in registry.queues_for(config.worker_models) for band in bands(config, queue)),
                config.webhook_queue,
            ]
        ),
        "task_default_delivery_mode": "persistent",
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # Long jobs: acknowledge after the job (a worker that dies has acknowledged
        # nothing, and the broker hands its jobs out again), and reserve no more than
        # one message per free slot. (`task_reject_on_worker_lost` is not set: it acts
        # only when a prefork pool's child dies, and the pool is threads; Celery's
        # `-P prefork` on the command line does not override `worker_pool`.)
        "task_acks_late": True,
        # With quorum queues (no channel-wide prefetch: each band's consumer has its own),
        # a worker holds one more job of each band per slot, so the job that takes a
        # freed slot is the most urgent waiting, not the one that came first: the next
        # message of the band just finished arrives only after its acknowledgement.
        "worker_prefetch_multiplier": 2 if config.quorum_queues else 1,
        # After a broker reconnect, Celery lowers the prefetch count while the jobs begun
        # before it run, and is meant to raise it again as they finish; on RabbitMQ it
        # stayed low and the worker stopped taking jobs (celery/celery#9512). Jobs begun
        # before the reconnect finish and store their results (their second delivery
        # finds the lease, then the result: tasks/running.py).
        "worker_enable_prefetch_count_reduction": False,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        # A channel closed by the broker (RabbitMQ's consumer timeout on a server that
        # ignores the consumer argument above) restarts the consumer instead of the
        # worker dying with "Unrecoverable error: PreconditionFailed".
        "broker_channel_error_retry": True,
        # No STARTED state in Redis: it cost each job a GET, a SET and a PUBLISH in the
        # worker, and a message to every waiting API.
        # Flower still shows the start, from the worker's task events.
        "task_track_started": False,
        "task_publish_retry_policy": {
            # Each try after a lost connection connects to the next node of a cluster.
            "max_retries": 1 + max(2, len(config.rabbit_mq_nodes)),
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
        # A model server batches many requests; one worker keeps many calls in flight.
        "worker_pool": "threads",
        "worker_concurrency": config.worker_concurrency,
        "worker_send_task_events": True,
    }
