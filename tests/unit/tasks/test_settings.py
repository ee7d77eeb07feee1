"""The workers' Celery settings: the shared ones, and the worker's own classes by name."""

from __future__ import annotations

from typing import Any

import pytest

from shared.config import Config
from tasks.settings import worker_settings

pytestmark = pytest.mark.unit


def config(**settings: Any) -> Config:
    return Config(_env_file=None, **settings)  # type: ignore[call-arg]


def test_one_node_and_classic_priority_queues_stay_the_default() -> None:
    single = config(rabbit_mq_host="rabbit", rabbit_mq_password="s3cret")
    assert single.broker_url == "amqp://guest:s3cret@rabbit:5672/%2F"
    settings = worker_settings(single)
    assert [queue.name for queue in settings["task_queues"]] == ["llm-api-queue", "llm-api-queue.webhooks"]
    assert settings["task_queues"][0].queue_arguments == {"x-max-priority": 10}
    assert settings["task_queues"][0].exchange.type == "direct"
    assert settings["worker_pool"] == "threads" and settings["worker_prefetch_multiplier"] == 1
    assert settings["result_backend"].endswith("ResultStore+redis://localhost:6379/0")


def test_a_worker_of_quorum_queues_consumes_every_band_and_starts_the_most_urgent_first() -> None:
    settings = worker_settings(config(rabbit_mq_host="r1,r2,r3", rabbit_mq_queue_type="quorum"))
    names = [queue.name for queue in settings["task_queues"]]
    assert names == ["llm-api-queue.high", "llm-api-queue", "llm-api-queue.low", "llm-api-queue.webhooks"]
    for queue in settings["task_queues"]:
        # RabbitMQ 3.10 refuses x-max-priority on a quorum queue.
        assert queue.queue_arguments == {"x-queue-type": "quorum"}
        assert queue.exchange.type == "topic" and queue.routing_key == queue.name
    assert settings["worker_pool"] == "tasks.broker.band_pool:BandPool"
    assert settings["worker_prefetch_multiplier"] == 2


def test_sentinels_make_the_result_backend_follow_the_master() -> None:
    sentinel = config(
        rabbit_mq_host="r",
        redis_sentinels="s1,s2:26380",
        redis_sentinel_master="gateway",
        redis_password="pw/1",
        redis_sentinel_password="spw",
        redis_db=2,
    )
    assert sentinel.sentinels == [("s1", 26379), ("s2", 26380)]
    settings = worker_settings(sentinel)
    assert settings["result_backend"] == (
        "tasks.result_store:SentinelResultStore+sentinel://:pw%2F1@s1:26379/2;sentinel://:pw%2F1@s2:26380/2"
    )
    options = settings["result_backend_transport_options"]
    assert options["master_name"] == "gateway" and options["sentinel_kwargs"]["password"] == "spw"
    assert settings["redis_replica_acks"] == 1
