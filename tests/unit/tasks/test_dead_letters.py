"""Dead letters, what needs no broker: the queue as declared, which failed jobs are kept
(and with what), what a dead letter says, and a job settled since it failed. Listing,
replaying and purging on a real broker are in tests/faults/test_faults.py."""

from __future__ import annotations

import calendar
import json
import logging
from types import SimpleNamespace
from typing import Any

import pytest
from celery.signals import task_failure

from shared.config import Config
from shared.contract import ModelServerFailed, ModelServerRejected, TaskName
from tasks import dead_letters
from tasks.dead_letters import DEAD_AT, REASON, dead_letter_queue, describe, settled_as
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


class App:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send_task(self, name: str, **options: Any) -> None:
        self.sent.append({"name": name, **options})


class Task:
    """The task whose job failed, as the failure signal's sender: Celery's side of it."""

    def __init__(self, name: str, app: App, stored: Any) -> None:
        self.name, self.app = name, app
        redis = ScriptedRedis({"get": json.dumps(stored) if stored else None})
        self.worker = SimpleNamespace(config=config(), running=SimpleNamespace(redis=redis))
        self.request = SimpleNamespace(traceparent="00-" + "a" * 32 + "-" + "b" * 16 + "-01")


def fail(exception: Exception, job: dict[str, Any], task: str = "llm.chat", stored: Any = None) -> App:
    """A job's failure as Celery signals it; the dead letters it sent."""
    app = App()
    sender = Task(task, app, stored)
    task_failure.send(
        sender=sender, task_id="j1", exception=exception, args=[job], kwargs={}, traceback=None, einfo=None
    )
    return app


def test_a_failed_job_is_kept_with_why_and_its_trace() -> None:
    (kept,) = fail(ModelServerFailed("model server answered 500: oops"), {"meta": {}}).sent
    assert (kept["name"], kept["task_id"], kept["args"]) == ("llm.chat", "j1", [{"meta": {}}])
    assert kept["queue"].name == "llm-api-queue.dead"
    assert kept["headers"][REASON] == "ModelServerFailed: model server answered 500: oops"
    assert kept["headers"]["traceparent"].startswith("00-aaaa") and kept["headers"][DEAD_AT] > 0


@pytest.mark.parametrize(
    ("exception", "job", "task"),
    [
        (ModelServerRejected("no such model", 404), {"meta": {}}, "llm.chat"),  # the caller's to fix
        (ModelServerFailed("down"), {}, TaskName.MODELS.value),  # the gateway's own: asked again when needed
        (
            ModelServerFailed("down"),
            {"meta": {}, "batch": {"id": "b", "line": 3}},
            "llm.chat",
        ),  # its batch's error file
    ],
)
def test_what_replaying_cannot_help_or_is_kept_elsewhere_is_not_a_dead_letter(
    exception: Exception, job: dict[str, Any], task: str
) -> None:
    assert fail(exception, job, task).sent == []


def test_a_failure_after_another_run_answered_is_dropped(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=dead_letters.__name__):
        app = fail(ModelServerFailed("cut off"), {"meta": {}}, stored={"status": "SUCCESS", "result": {}})
    assert app.sent == [] and "another run answered it" in caplog.text


def test_replay_needs_the_jobs_named_or_all(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ENV_FILE", "")
    with pytest.raises(SystemExit) as stopped:
        dead_letters.main(["replay"])
    assert stopped.value.code == 2 and "name the jobs to replay, or --all" in capsys.readouterr().err
