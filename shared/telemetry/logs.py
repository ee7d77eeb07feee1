"""One JSON object per log line, in the API and the workers, with the job's id, model
and queue on every line about a job: ``grep <job_id>`` follows it across processes.

``LOG_FORMAT=text`` keeps plain lines (easier to read in a terminal).
"""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from shared.telemetry import tracing

# Set while a worker thread runs a job (tasks/llm.py), read by every line it logs.
current_job: ContextVar[dict[str, str] | None] = ContextVar("current_job", default=None)

JOB_FIELDS = ("job_id", "model", "queue", "tenant")
# Figures a line may carry as `extra`: the API's access line (status, seconds, client),
# the worker's "job done" (seconds run and queued, tokens produced, why the answer ended).
DETAIL_FIELDS = ("status", "seconds", "client", "queued_seconds", "tokens", "finish_reason")


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", "job_id", "model", "queue", ...}`` per line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        job = current_job.get() or {}
        for field in JOB_FIELDS:
            value = getattr(record, field, None) or job.get(field)
            if value:
                line[field] = value
        for field in DETAIL_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                line[field] = value
        # The trace the line belongs to, when tracing is on (shared/telemetry/tracing.py).
        ids = tracing.log_ids()
        if ids is not None:
            line["trace_id"], line["span_id"] = ids
        # Celery's own lines about a task ("received", "succeeded") carry its id in args.
        if "job_id" not in line and isinstance(record.args, dict) and isinstance(record.args.get("id"), str):
            line["job_id"] = record.args["id"]
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def use_json(*loggers: logging.Logger) -> None:
    """Make the handlers of `loggers` (the root logger when none) write JSON lines."""
    for logger in loggers or (logging.getLogger(),):
        for handler in logger.handlers:
            handler.setFormatter(JsonFormatter())
