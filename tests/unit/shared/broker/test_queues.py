"""The broker's queues as both sides declare them: classic priority queues, or quorum
queues in three priority bands."""

from __future__ import annotations

from typing import Any

import pytest

from shared.broker.queues import band_queue, bands, model_queue
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
