"""The broker's queues as both sides declare them: classic priority queues, or quorum
queues in three priority bands."""

from __future__ import annotations

from typing import Any

import pytest

from shared.broker.queues import MAX_PRIORITY, band_of, band_queue, bands, declared, model_queue, queue_arguments
from shared.config import Config

pytestmark = pytest.mark.unit


def config(**settings: Any) -> Config:
    return Config(_env_file=None, **settings)  # type: ignore[call-arg]


def test_quorum_queues_come_in_three_priority_bands() -> None:
    quorum = config(rabbit_mq_host="r1,r2,r3", rabbit_mq_queue_type="quorum")
    assert bands(quorum, "q") == ["q.high", "q", "q.low"]
    assert [band_queue(quorum, "q", p) for p in range(10)] == ["q.low"] * 4 + ["q"] * 3 + ["q.high"] * 3
    assert band_queue(quorum, "q", None) == "q"
    assert {model_queue(name) for name in bands(quorum, "q")} == {"q"}
    # Classic queues: one queue per model, as before.
    assert bands(config(rabbit_mq_host="r"), "q") == ["q"] and band_queue(config(rabbit_mq_host="r"), "q", 9) == "q"


def test_a_priority_is_named_by_the_band_it_waits_in_on_quorum_queues() -> None:
    quorum = config(rabbit_mq_host="r1,r2,r3", rabbit_mq_queue_type="quorum")
    suffix = {"high": ".high", "normal": "", "low": ".low"}
    for priority in [*range(10), None]:
        assert band_queue(quorum, "q", priority) == "q" + suffix[band_of(priority)]
    assert band_of(None) == band_of(5) == "normal" and band_of(9) == "high" and band_of(0) == "low"


def test_a_queue_is_declared_durable_with_the_arguments_of_its_kind() -> None:
    classic = declared("q", config(rabbit_mq_host="r"), {"x-consumer-timeout": 1000})
    assert (classic.durable, classic.exchange.name, classic.exchange.type, classic.routing_key) == (
        True,
        "q",
        "direct",
        "q",
    )
    assert classic.queue_arguments == {"x-max-priority": MAX_PRIORITY} and classic.consumer_arguments == {
        "x-consumer-timeout": 1000
    }
    quorum = config(rabbit_mq_host="r", rabbit_mq_queue_type="quorum")
    assert declared("q", quorum).exchange.type == "topic"  # delayed delivery routes through topic exchanges
    assert queue_arguments(quorum, priorities=False) == {"x-queue-type": "quorum"}
    assert queue_arguments(config(rabbit_mq_host="r"), priorities=False) is None
    assert declared("q", config()).queue_arguments is None  # a Redis broker's lists


def test_only_a_bands_suffix_is_taken_off_for_its_models_queue() -> None:
    assert [model_queue(name) for name in ("q.high", "q.low", "q", "q.webhooks", "q.highest")] == [
        "q", "q", "q", "q.webhooks", "q.highest",
    ]  # fmt: skip
