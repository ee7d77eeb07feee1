"""The signals to scale a model's workers on (api/observability/scaling.py), read from
the broker's depths and the workers' reports in Redis (a fake Redis: tests/unit/api/edge.py)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from api.errors import BrokerUnavailable, ResultStoreUnavailable
from api.observability.scaling import Scaling, Signals
from api.tenancy.fair_share import FairShare
from api.tenancy.guard import load_tenants_of
from shared.config import Config
from shared.contract.keys import capacity_field
from shared.registry import load_registry
from shared.servers import PRIORITY_STEP
from tests.unit.api.edge import FakeRedis, config

pytestmark = pytest.mark.unit

MODELS = json.dumps({"models": [{"name": "small", "url": "http://a:1"}, {"name": "large", "url": "http://b:1"}]})


def scaling_of(settings: Config, redis: FakeRedis) -> Scaling:
    registry = load_registry(settings)
    fair = FairShare(settings, load_tenants_of(settings), registry.queues, redis)  # type: ignore[arg-type]
    return Scaling(settings, registry, None, fair, redis)  # type: ignore[arg-type]


def report(redis: FakeRedis, settings: Config, queue: str, worker: str, at: float, **counts: int) -> None:
    fields = {"at": at, "every": 1.0, "slots": 0, "busy": 0, "running": 0, "held": 0, **counts}
    redis.hashes.setdefault(settings.keys.capacity, {})[capacity_field(queue, worker).encode()] = json.dumps(
        fields
    ).encode()


def test_a_broker_that_cannot_count_its_queues_is_named() -> None:
    settings = config(rabbit_mq_host="127.0.0.1")
    with pytest.raises(BrokerUnavailable, match="RabbitMQ"):
        asyncio.run(scaling_of(settings, FakeRedis()).read({settings.queue_name: -1}))


def test_the_workers_reports_are_summed_per_model_and_a_dead_workers_dropped() -> None:
    settings = config(models=MODELS, queue_name="q")
    redis = FakeRedis()
    now = time.time()
    report(redis, settings, "q.small", "w1", now, slots=4, busy=4, running=4, held=6)
    report(redis, settings, "q.small", "w2", now, slots=4, busy=1, running=1, held=1)
    report(redis, settings, "q.small", "dead", now - 10, slots=8, busy=8)  # three intervals old: gone
    # The oldest job waiting for the small model was accepted 30 s ago.
    redis.zsets[settings.keys.queued] = {b"old": now - 30, b"new": now - 1}
    redis.hashes[settings.keys.job("old")] = {b"queue": b"q.small"}
    redis.hashes[settings.keys.job("new")] = {b"queue": b"q.small"}
    signals = asyncio.run(scaling_of(settings, redis).read({"q.small": 3, "q.large": 0}))
    small = signals["small"]
    # Waiting: 3 in the queue, and 2 held by workers beyond their busy slots (6+1 held, 4+1 busy).
    assert (small.waiting, small.running, small.slots, small.busy_slots, small.workers) == (5, 5, 8, 5, 2)
    assert small.demand == 10 and 29 < small.oldest_waiting_seconds < 60
    assert signals["large"] == Signals("q.large", 0, 0.0, 0, 0, 0, 0)
    assert capacity_field("q.small", "dead").encode() not in redis.hashes[settings.keys.capacity]
    assert "servers" not in small.as_dict() and small.as_dict()["demand"] == 10


def test_a_tenants_queue_counts_to_its_models_waiting_jobs(tmp_path: Path) -> None:
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text("tenants:\n  - {name: alpha, keys: [a-key]}\n  - {name: beta, keys: [b-key]}\n")
    settings = config(queue_name="q", api_keys_file=str(tenants), fair_share=True)
    scaling = scaling_of(settings, FakeRedis())
    (model,) = asyncio.run(scaling.read({"q": 1, "q.tenant.alpha": 2, "q.tenant.beta": 3})).values()
    assert model.waiting == 6


def test_waiting_jobs_are_counted_by_priority_band_only_when_asked() -> None:
    settings = config(models=MODELS, queue_name="q")
    redis = FakeRedis()
    now = time.time()
    claims = {"a": ("q.small", b"9"), "b": ("q.small", b"7"), "c": ("q.small", None), "d": ("q.small", b"0"),
              "e": ("q.large", b"3"), "f": ("elsewhere", b"9")}  # fmt: skip
    redis.zsets[settings.keys.queued] = {job.encode(): now - n for n, job in enumerate(claims)}
    for job, (queue, priority) in claims.items():
        redis.hashes[settings.keys.job(job)] = {
            b"queue": queue.encode(),
            **({b"priority": priority} if priority else {}),
        }
    depths = {"q.small": 4, "q.large": 1}
    plain = asyncio.run(scaling_of(settings, redis).read(depths))
    assert "waiting_by_band" not in plain["small"].as_dict()
    banded = asyncio.run(scaling_of(settings, redis).read(depths, bands=True))
    # No priority given: the default's band (5, normal).
    assert banded["small"].as_dict()["waiting_by_band"] == {"high": 2, "normal": 1, "low": 1}
    assert banded["large"].waiting_by_band == {"high": 0, "normal": 0, "low": 1}


def test_jobs_in_line_for_a_server_slot_are_counted_by_priority_band_when_asked() -> None:
    pooled = {"name": "large", "servers": [{"url": "http://a:1", "name": "a"}, {"url": "http://b:1", "name": "b"}]}
    settings = config(models=json.dumps({"models": [pooled]}), queue_name="q")
    redis = FakeRedis()
    accepted = int(time.time() * 1000)
    # As the workers score their waiters (tasks/model/pooled.py): 9 - priority steps, then the time.
    line = {b"p9": 9, b"p7": 7, b"p6": 6, b"p4": 4, b"p3": 3, b"p0": 0}
    waiting = {waiter: (9 - priority) * PRIORITY_STEP + accepted for waiter, priority in line.items()}
    redis.zsets[settings.keys.server_waiting("large")] = waiting
    (plain,) = asyncio.run(scaling_of(settings, redis).read({"q.large": 0})).values()
    assert plain.waiting_for_server == 6 and "waiting_for_server_by_band" not in plain.as_dict()
    (banded,) = asyncio.run(scaling_of(settings, redis).read({"q.large": 0}, bands=True)).values()
    assert banded.as_dict()["waiting_for_server_by_band"] == {"high": 2, "normal": 2, "low": 2}


def test_a_result_store_that_cannot_be_read_is_named() -> None:
    redis = FakeRedis()
    redis.down = True
    settings = config(queue_name="q")
    with pytest.raises(ResultStoreUnavailable, match="worker slots"):
        asyncio.run(scaling_of(settings, redis).read({"q": 0}))
