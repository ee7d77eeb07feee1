"""Settings of the clustered setup: several RabbitMQ nodes, quorum queues, Redis Sentinels.
The defaults (one node, classic priority queues, REDIS_HOST) stay as they were."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from celery.concurrency.thread import TaskPool
from pydantic import ValidationError

from shared.broker.queues import band_queue, bands, model_queue
from shared.broker.settings import celery_settings
from shared.config import Config
from shared.storage import redis_clients
from tasks.broker.band_pool import BandPool
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


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"rabbit_mq_host": "rabbit-1,rabbit-2:amqp"}, "not host:port: 'rabbit-2:amqp'"),
        ({"redis_sentinels": "s1:26379"}, "REDIS_SENTINELS needs RABBIT_MQ_HOST"),
        ({"rabbit_mq_queue_type": "quorum"}, "RABBIT_MQ_QUEUE_TYPE=quorum needs RABBIT_MQ_HOST"),
        ({"rabbit_mq_host": "r", "rabbit_mq_queue_type": "stream"}, "'classic' or 'quorum'"),
    ],
)
def test_a_cluster_setting_that_cannot_work_stops_the_start(settings: dict[str, str], says: str) -> None:
    with pytest.raises(ValidationError) as raised:
        config(**settings)
    assert says in str(raised.value)


def test_quorum_queues_come_in_three_priority_bands() -> None:
    quorum = config(rabbit_mq_host="r1,r2,r3", rabbit_mq_queue_type="quorum")
    assert bands(quorum, "q") == ["q.high", "q", "q.low"]
    assert [band_queue(quorum, "q", p) for p in range(10)] == ["q.low"] * 4 + ["q"] * 3 + ["q.high"] * 3
    assert band_queue(quorum, "q", None) == "q"
    assert {model_queue(name) for name in bands(quorum, "q")} == {"q"}
    settings = worker_settings(quorum)
    names = [queue.name for queue in settings["task_queues"]]
    assert names == ["llm-api-queue.high", "llm-api-queue", "llm-api-queue.low", "llm-api-queue.webhooks"]
    for queue in settings["task_queues"]:
        # RabbitMQ 3.10 refuses x-max-priority on a quorum queue.
        assert queue.queue_arguments == {"x-queue-type": "quorum"}
        assert queue.exchange.type == "topic" and queue.routing_key == queue.name
    assert settings["worker_pool"] == "tasks.broker.band_pool:BandPool"
    assert settings["worker_prefetch_multiplier"] == 2
    # Classic queues: one queue per model, as before.
    assert bands(config(rabbit_mq_host="r"), "q") == ["q"] and band_queue(config(rabbit_mq_host="r"), "q", 9) == "q"


def test_sentinels_make_the_result_backend_and_every_client_follow_the_master() -> None:
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
    client = redis_clients.sync_client(sentinel)
    pool = client.connection_pool
    assert pool.service_name == "gateway" and pool.connection_kwargs["db"] == 2
    assert [s.connection_pool.connection_kwargs["port"] for s in pool.sentinel_manager.sentinels] == [26379, 26380]
    bounded = redis_clients.async_client(sentinel, max_connections=4)
    assert bounded.connection_pool.max_connections == 4 and bounded.connection_pool.service_name == "gateway"


class _Recorder:
    def __init__(self) -> None:
        self.order: list[str] = []
        self.gate = threading.Event()

    def target(self, name: str) -> None:
        if name == "first":
            self.gate.wait(5)
        self.order.append(name)


def _request(priority: int | None) -> tuple[Any, ...]:
    return ("llm.generate", "id", {"delivery_info": {"priority": priority}}, b"{}", "application/json", "utf-8")


def test_the_band_pool_starts_the_most_urgent_held_job_first() -> None:
    recorder = _Recorder()
    pool = BandPool(limit=1)
    pool.start()
    try:
        # One thread, busy with "first": the jobs received meanwhile wait, then start
        # by priority, the earliest first among equals.
        pool.apply_async(lambda *_: recorder.target("first"), args=_request(5))
        while pool.held:  # "first" taken by the thread
            time.sleep(0.01)
        for name, priority in [("low-a", 0), ("mid", 5), ("high", 9), ("low-b", 0), ("none", None)]:
            pool.apply_async(lambda *_, name=name: recorder.target(name), args=_request(priority))
        assert pool.held == 5
        recorder.gate.set()
        deadline = time.monotonic() + 5
        while len(recorder.order) < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        pool.stop()
    assert recorder.order == ["first", "high", "mid", "low-a", "low-b", "none"]
    assert issubclass(BandPool, TaskPool)
