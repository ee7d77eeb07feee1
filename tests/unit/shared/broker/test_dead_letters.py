"""Dead letters as an operator reads and replays them (shared/broker/dead_letters.py):
the queue they are kept in, what one says, and which dead job must not run again.
Listing and replaying on a real broker: tests/integration/api/test_dead_letters.py and
tests/faults/test_faults.py."""

from __future__ import annotations

import calendar
import json
from types import SimpleNamespace
from typing import Any

import pytest

from shared.broker.dead_letters import DEAD_AT, REASON, dead_letter_queue, describe, settled_as
from shared.config import Config
from testing.scripted_redis import ScriptedRedis

pytestmark = pytest.mark.unit


def config(**settings: Any) -> Config:
    return Config(_env_file=None, redis_prefix="p", **settings)  # type: ignore[call-arg]


def test_on_rabbitmq_the_queue_keeps_the_newest_dead_letters_and_is_replicated_with_quorum_queues() -> None:
    classic = dead_letter_queue(config(rabbit_mq_host="mq", dead_letter_max=50))
    assert (classic.name, classic.durable, classic.routing_key) == ("llm-api-queue.dead", True, "llm-api-queue.dead")
    assert classic.queue_arguments == {"x-max-length": 50, "x-overflow": "drop-head"}  # no priorities
    quorum = dead_letter_queue(config(rabbit_mq_host="r1,r2,r3", rabbit_mq_queue_type="quorum"))
    assert quorum.queue_arguments == {"x-queue-type": "quorum", "x-max-length": 100000, "x-overflow": "drop-head"}
    assert dead_letter_queue(config()).queue_arguments is None  # a Redis broker's list


def test_a_dead_letter_says_which_job_why_and_when() -> None:
    at = calendar.timegm((2026, 3, 4, 5, 6, 7))
    headers = {"id": "j1", "task": "llm.chat", REASON: "ModelServerFailed: down", DEAD_AT: at, "argsrepr": "({},)"}
    assert describe(SimpleNamespace(headers=headers)) == {  # type: ignore[arg-type]
        "job_id": "j1",
        "task": "llm.chat",
        "reason": "ModelServerFailed: down",
        "dead_at": "2026-03-04T05:06:07Z",
        "args": "({},)",
    }
    assert describe(SimpleNamespace(headers=None))["dead_at"] is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("stored", "settled"),
    [
        ({"status": "SUCCESS", "result": {}}, "answered"),
        ({"status": "REVOKED", "result": {}}, "cancelled"),
        ({"status": "FAILURE", "result": {}}, None),  # a failure may be replayed
        (None, None),
        ("not json", None),
        ([1, 2], None),
    ],
)
def test_only_a_job_answered_or_cancelled_since_it_failed_is_settled(stored: Any, settled: str | None) -> None:
    raw = stored if isinstance(stored, str) or stored is None else json.dumps(stored)
    fake = ScriptedRedis({"get": raw})
    assert settled_as(fake, config(), "j1") == settled  # type: ignore[arg-type]
    assert fake.calls[0].args == ("p:celery-task-meta-j1",)
