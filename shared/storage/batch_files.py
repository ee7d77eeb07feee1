"""How files and batches are laid out in the file store, and the record of each
finished batch line: what the API (which drives batches) and the workers (which
run their lines) both read and write.

    files/{file_id}.json            a file's object (OpenAI's, plus its owner)
    files/{file_id}.data            its content
    batches/{batch_id}/batch.json   a batch's object (OpenAI's, plus what drives it)
    batches/{batch_id}/stop         written when the batch is cancelled or expires:
                                    its lines not started never start
    batches/{batch_id}/lines/{n}.ok   line n's answer, written by the worker that ran it
    batches/{batch_id}/lines/{n}.err  line n's failure
    active/{batch_id}               a batch not finished yet (what the API looks after)
    owners/{owner}/files/{file_id}  an owner's file (empty): what a list of its files reads,
                                    rather than every owner's files
    owners/{owner}/batches/{batch_id}  the same for its batches
    owners/files-indexed, owners/batches-indexed
                                    written once every file (batch) kept before that index
                                    has its entry

A worker writes a line's record before its result is stored in Redis and its
message acknowledged: a line whose record exists is never sent to the model server
again, whatever Redis forgot.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from shared.storage.file_store import FileStore

OK, ERR = "ok", "err"


def file_object(file_id: str) -> str:
    return f"files/{file_id}.json"


def file_data(file_id: str) -> str:
    return f"files/{file_id}.data"


def owner_folder(owner: str, kind: str) -> str:
    """The folder of the entries of an owner's `kind` ("files", "batches"), `owner` as
    files and batches name it (``tenant:research``)."""
    return f"owners/{re.sub(r'[^A-Za-z0-9_-]', '-', owner)}/{kind}"


def owner_entry(owner: str, kind: str, name: str) -> str:
    return f"{owner_folder(owner, kind)}/{name}"


def indexed_mark(kind: str) -> str:
    return f"owners/{kind}-indexed"


def batch_object(batch_id: str) -> str:
    return f"batches/{batch_id}/batch.json"


def batch_stop(batch_id: str) -> str:
    return f"batches/{batch_id}/stop"


def batch_lines(batch_id: str) -> str:
    return f"batches/{batch_id}/lines"


def line_record(batch_id: str, index: int, outcome: str) -> str:
    return f"{batch_lines(batch_id)}/{index:07d}.{outcome}"


ACTIVE = "active"


def active_marker(batch_id: str) -> str:
    return f"{ACTIVE}/{batch_id}"


def line_job_id(batch_id: str, custom_id: str) -> str:
    """The job id of a batch's line: the same for the same batch and custom_id, so a
    line queued twice (its batch driven again after a restart) is one job."""
    digest = hashlib.sha256(custom_id.encode()).hexdigest()[:24]
    return f"{batch_id}-{digest}"


@dataclass(frozen=True)
class LineRecord:
    """A finished line: its answer (the task's result), or its failure."""

    index: int
    answer: dict[str, Any] | None = None
    failure: dict[str, Any] | None = None  # {"exc_type", "message", "status"}


class BatchLines:
    """The records of batches' finished lines (blocking calls)."""

    def __init__(self, store: FileStore) -> None:
        self.store = store

    def read(self, batch_id: str, index: int) -> LineRecord | None:
        """Line `index`'s record, an answer before a failure; None while it has none."""
        for outcome in (OK, ERR):
            raw = self.store.get(line_record(batch_id, index, outcome))
            if raw is not None:
                found = json.loads(raw)
                return LineRecord(index, found, None) if outcome == OK else LineRecord(index, None, found)
        return None

    def write_answer(self, batch_id: str, index: int, answer: dict[str, Any]) -> None:
        self.store.put(line_record(batch_id, index, OK), json.dumps(answer).encode())

    def write_failure(self, batch_id: str, index: int, exc_type: str, message: str, status: int) -> None:
        failure = {"exc_type": exc_type, "message": message, "status": status}
        self.store.put(line_record(batch_id, index, ERR), json.dumps(failure).encode())

    def stop(self, batch_id: str, why: str, at: int) -> None:
        """Mark the batch stopped ("cancelled", "expired") at `at`: its lines not started never start."""
        self.store.put(batch_stop(batch_id), json.dumps({"why": why, "at": at}).encode())

    def stop_mark(self, batch_id: str) -> dict[str, Any] | None:
        """The batch's stop mark ({"why", "at"}), or None."""
        raw = self.store.get(batch_stop(batch_id))
        return json.loads(raw) if raw is not None else None

    def stopped(self, batch_id: str) -> str | None:
        """Why the batch was stopped ("cancelled", "expired"), or None."""
        mark = self.stop_mark(batch_id)
        return str(mark.get("why")) if mark is not None else None

    def finished(self, batch_id: str) -> dict[int, str]:
        """Each finished line's outcome (OK before ERR, when a line has both)."""
        outcomes: dict[int, str] = {}
        for name in self.store.names(batch_lines(batch_id)):
            number, _, outcome = name.partition(".")
            if number.isdigit() and outcome in (OK, ERR):
                index = int(number)
                if outcomes.get(index) != OK:
                    outcomes[index] = outcome
        return outcomes
