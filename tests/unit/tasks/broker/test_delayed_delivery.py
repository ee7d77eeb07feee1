"""Delayed delivery set up once per cluster: through the node the consumer is connected to,
and only when that fails through the other nodes in turn, until one answers."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest
from celery import Celery

from tasks.broker.delayed_delivery import ClusterDelayedDelivery

pytestmark = pytest.mark.unit

NODES = "amqp://guest:pw@r1:5672//;amqp://guest:pw@r2:5672//;amqp://guest:pw@r3:5672//"


class Lost:
    """The consumer's connection, its node gone since."""

    def channel(self) -> Any:
        raise ConnectionError("node r1 gone")


class Step(ClusterDelayedDelivery):
    """The step, with Celery's setup through one URL (which connects to a broker) replaced
    by one that answers from `down`."""

    def __init__(self, down: set[str]) -> None:
        super().__init__(parent=None)
        self.down = down
        self.tried: list[str] = []

    def _setup_delayed_delivery(self, c: Any, broker_url: str) -> None:
        self.tried.append(broker_url)
        if broker_url in self.down:
            raise ConnectionError(f"{broker_url} refused")


def consumer() -> Any:
    app = Celery(set_as_current=False)
    app.conf.update(broker_url=NODES, broker_native_delayed_delivery_queue_type="quorum")
    return SimpleNamespace(app=app, connection=Lost())


def test_when_the_consumers_node_fails_the_others_are_tried_in_turn_until_one_answers() -> None:
    first, second, _ = NODES.split(";")
    step = Step(down={first})
    step.start(consumer())
    assert step.tried == [first, second]


def test_when_no_node_answers_the_worker_still_starts_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    step = Step(down=set(NODES.split(";")))
    with caplog.at_level(logging.WARNING):
        step.start(consumer())
    assert step.tried == NODES.split(";")
    assert "delayed delivery not set up: no broker node answered" in caplog.text
