"""What a worker process reports of its slots and load, for the API's scaling signals."""

from __future__ import annotations

import json
import logging

import pytest

from shared.config import Config
from shared.contract.keys import capacity_field
from tasks.capacity import CapacityReporter, Load
from testing.scripted_redis import AWAY, ScriptedRedis

pytestmark = pytest.mark.unit


def reporter(fake: ScriptedRedis, **settings: float) -> CapacityReporter:
    config = Config(_env_file=None, redis_prefix="p", **settings)  # type: ignore[arg-type]
    load = Load(busy=3, running=2, held=5)
    return CapacityReporter(config, fake, "host:1", 8, ["q", "q.webhooks"], lambda: load)  # type: ignore[arg-type]


def test_each_queue_consumed_gets_the_processs_slots_and_load() -> None:
    fake = ScriptedRedis()
    reporter(fake, worker_report_seconds=2.0).report()
    (call,) = fake.named("hset")
    assert call.args == ("p:capacity",)
    fields = call.kwargs["mapping"]
    assert set(fields) == {capacity_field("q", "host:1"), capacity_field("q.webhooks", "host:1")}
    report = json.loads(fields[capacity_field("q", "host:1")])
    assert {k: report[k] for k in ("slots", "busy", "running", "held", "every")} == {
        "slots": 8, "busy": 3, "running": 2, "held": 5, "every": 2.0,
    }  # fmt: skip
    assert report["at"] > 0


def test_a_reporter_reports_until_stopped_then_takes_its_fields_away(caplog: pytest.LogCaptureFixture) -> None:
    fake = ScriptedRedis()
    running = reporter(fake, worker_report_seconds=0.01).start()
    try:
        fake.wait_for("hset", 2)
    finally:
        running.stop()
    (withdrawn,) = fake.named("hdel")
    assert withdrawn.args == ("p:capacity", capacity_field("q", "host:1"), capacity_field("q.webhooks", "host:1"))
    fake.away = AWAY
    with caplog.at_level(logging.WARNING):
        reporter(fake).stop()  # a Redis away: the API drops the report once it is old
    assert "could not withdraw" in caplog.text
