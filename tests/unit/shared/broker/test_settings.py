"""Celery's settings both sides share: the broker's options on RabbitMQ and on Redis,
the queues as declared, and what keeps a long job safe."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.broker.settings import celery_settings, priority_for
from shared.config import Config

pytestmark = pytest.mark.unit


def config(**settings: Any) -> Config:
    return Config(_env_file=None, **settings)  # type: ignore[call-arg]


def test_without_rabbitmq_the_broker_is_redis_and_held_messages_are_leased() -> None:
    config = Config(_env_file=None, redis_host="cache", llm_deadline=1800, job_lease=20)  # type: ignore[call-arg]
    settings = celery_settings(config)
    assert settings["broker_url"] == "redis://cache:6379/0"
    assert settings["broker_transport"] == "shared.broker.redis_transport:Transport"
    json.dumps(settings["broker_transport"])  # settings travel as JSON (celery inspect conf, Flower)
    # Workers renew the messages they hold (tasks/running.py): a message is handed out
    # again a lease after its worker stopped renewing it, however long its job runs.
    options = settings["broker_transport_options"]
    assert options["visibility_timeout"] == 20
    assert options["unacked_restore_interval"] * options["unacked_restore_throttle"] < 20
    assert options["global_keyprefix"] == "llm-api:"


def test_rabbitmq_consumers_may_hold_a_message_longer_than_the_longest_job() -> None:
    config = Config(_env_file=None, rabbit_mq_host="mq", llm_deadline=3600)  # type: ignore[call-arg]
    queue, webhooks = celery_settings(config)["task_queues"]
    assert queue.consumer_arguments["x-consumer-timeout"] > 3600 * 1000
    # A webhook delivery waiting for its next try is held by a worker (Celery's countdown).
    assert webhooks.name == "llm-api-queue.webhooks"
    assert webhooks.consumer_arguments["x-consumer-timeout"] > config.webhook_max_backoff * 1000


def test_celery_settings_make_long_jobs_safe() -> None:
    config = Config(_env_file=None, rabbit_mq_host="mq", queue_name="jobs", worker_concurrency=80)  # type: ignore[call-arg]
    settings = celery_settings(config)
    queue, _webhooks = settings["task_queues"]
    assert (queue.name, queue.durable, settings["task_default_queue"]) == ("jobs", True, "jobs")
    assert settings["task_acks_late"]
    assert settings["worker_prefetch_multiplier"] == 1
    assert settings["task_default_delivery_mode"] == "persistent"
    assert settings["broker_transport_options"] == {}  # confirms: see test_job_queue
    assert (settings["worker_pool"], settings["worker_concurrency"]) == ("threads", 80)
    assert settings["worker_send_task_events"]
    assert settings["broker_channel_error_retry"]  # a consumer timeout does not kill the worker
    assert not settings["worker_enable_prefetch_count_reduction"]
    assert settings["result_backend_transport_options"] == {"global_keyprefix": "llm-api:"}


def test_several_rabbitmq_nodes_are_kombus_failover_urls() -> None:
    cluster = config(rabbit_mq_host="rabbit-1, rabbit-2:5673,10.0.0.3", rabbit_mq_password="p@ss")
    assert cluster.rabbit_mq_nodes == [("rabbit-1", 5672), ("rabbit-2", 5673), ("10.0.0.3", 5672)]
    assert cluster.broker_url.split(";") == [
        "amqp://guest:p%40ss@rabbit-1:5672/%2F",
        "amqp://guest:p%40ss@rabbit-2:5673/%2F",
        "amqp://guest:p%40ss@10.0.0.3:5672/%2F",
    ]
    # A publish lost with its node is tried through each of the others.
    assert celery_settings(cluster)["task_publish_retry_policy"]["max_retries"] == 4


def test_a_jobs_priority_is_the_brokers_where_higher_is_sooner_on_rabbitmq_and_lower_on_redis() -> None:
    rabbit, redis_broker = config(rabbit_mq_host="mq"), config()
    assert [priority_for(rabbit, p) for p in (9, 5, 0)] == [9, 5, 0]
    assert [priority_for(redis_broker, p) for p in (9, 5, 0)] == [0, 4, 9]
    # Kombu's Redis transport reads its lists lowest first, one per priority.
    assert celery_settings(redis_broker)["broker_transport_options"]["priority_steps"] == list(range(10))


def test_a_worker_of_some_models_consumes_their_queues_and_the_webhooks_alone() -> None:
    models = json.dumps({"models": [{"name": "a", "url": "x:1"}, {"name": "b", "url": "y:1", "queue": "big"}]})
    names = [queue.name for queue in celery_settings(config(models=models, worker_models="b"))["task_queues"]]
    assert names == ["big", "llm-api-queue.webhooks"]
    everything = [queue.name for queue in celery_settings(config(models=models))["task_queues"]]
    assert everything == ["big", "llm-api-queue.a", "llm-api-queue.webhooks"]
