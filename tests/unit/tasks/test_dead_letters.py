"""Dead letters, what needs no broker: the queue as declared, which failed jobs are kept
(and with what), what a dead letter says, and a job settled since it failed. Listing,
replaying and purging on a real broker are in tests/faults/test_faults.py."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace
from typing import Any

import pytest
from celery.signals import task_failure

from shared.config import Config
from shared.contract import ModelServerFailed, ModelServerRejected, TaskName
from tasks import dead_letters
from tasks.dead_letters import DEAD_AT, REASON
from testing.scripted_redis import ScriptedRedis

pytestmark = pytest.mark.unit


def config(**settings: Any) -> Config:
    return Config(_env_file=None, redis_prefix="p", **settings)  # type: ignore[call-arg]


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
