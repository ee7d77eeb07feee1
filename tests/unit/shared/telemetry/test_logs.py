"""One JSON object per log line, each line about a job carrying its id, model, queue and tenant."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from shared.telemetry.logs import JsonFormatter, current_job, use_json

pytestmark = pytest.mark.unit


def line(record: logging.LogRecord) -> dict[str, object]:
    return json.loads(JsonFormatter().format(record))


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("tasks.llm", logging.INFO, __file__, 1, message, args or None, None)
    made.__dict__.update(extra)
    return made


def test_a_line_about_a_job_carries_the_jobs_context_and_its_own_figures() -> None:
    token = current_job.set({"job_id": "j1", "model": "small", "queue": "q", "tenant": "acme"})
    try:
        said = line(record("job %s done", "j1", model="fallback", seconds=1.5, tokens=0, client=None))
    finally:
        current_job.reset(token)
    assert said["message"] == "job j1 done" and said["level"] == "INFO" and said["logger"] == "tasks.llm"
    # The line's own model (a fallback served it) over the job's; a figure of 0 is kept, None is not.
    assert (said["job_id"], said["model"], said["queue"], said["tenant"]) == ("j1", "fallback", "q", "acme")
    assert said["seconds"] == 1.5 and said["tokens"] == 0 and "client" not in said
    assert str(said["ts"]).endswith("+00:00")


def test_celerys_own_lines_about_a_task_carry_its_id_and_a_failure_its_traceback() -> None:
    celery_line = logging.LogRecord("celery.app.trace", logging.INFO, __file__, 1, "Task %(name)s[%(id)s] succeeded",
                                    None, None)  # fmt: skip
    celery_line.args = {"name": "llm.chat", "id": "j2"}
    assert line(celery_line)["job_id"] == "j2"
    try:
        raise ValueError("bad")
    except ValueError:
        failed = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    said = line(failed)
    assert "ValueError: bad" in str(said["error"]) and "job_id" not in said


def test_use_json_makes_every_handler_of_the_loggers_write_json() -> None:
    logger = logging.getLogger("test.logs.json")
    handler = logging.StreamHandler()
    logger.addHandler(handler)
    try:
        use_json(logger)
        assert isinstance(handler.formatter, JsonFormatter)
    finally:
        logger.removeHandler(handler)
