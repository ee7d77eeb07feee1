"""Running a batch's line: its outcome kept in the file store before anything else.

A line's record (shared/storage/batch_files.py) is written as soon as the model server has
answered (or the line has failed), before the result goes to Redis and the message
is acknowledged. A line delivered again (its worker died after writing, Redis lost
its result, its batch was driven again after an API restart) finds its record and
is answered from it: the model server is asked once per line. A line of a batch
that was cancelled or expired is not started.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery.exceptions import TaskPredicate

from shared.contract import FAILURES, BatchLine, JobFailure, failure_status
from shared.storage.batch_files import BatchLines

log = logging.getLogger(__name__)


class LineStopped(Exception):
    """The line's batch was cancelled or expired before the line started."""


def run_line(lines: BatchLines, line: BatchLine, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The line's answer: its record's, or `run`'s (recorded first). Raises its failure
    (a JobFailure: recorded first, or as recorded), or LineStopped."""
    record = lines.read(line.id, line.line)
    if record is not None:
        log.info("batch %s line %d already finished: answered from its record", line.id, line.line)
        if record.answer is not None:
            return record.answer
        failure = record.failure or {}
        kind = FAILURES.get(str(failure.get("exc_type")), JobFailure)
        raise kind(str(failure.get("message", "failed")), failure.get("status"))
    stopped = lines.stopped(line.id)
    if stopped is not None:
        raise LineStopped(stopped)
    try:
        answer = run()
    except TaskPredicate:  # cancelled, or answered already: no outcome of this run
        raise
    except JobFailure as exc:
        # The status an interactive request would have been answered with (the contract's).
        status, message = failure_status(type(exc).__name__, [exc.message, exc.status_code])
        lines.write_failure(line.id, line.line, type(exc).__name__, message, status)
        raise
    # Anything else (a worker's own error) is not the line's outcome: it fails this run,
    # and the API process driving the batch records it.
    lines.write_answer(line.id, line.line, answer)
    return answer
