"""How files and batches are laid out in the file store, and each batch line's record."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.storage.batch_files import (
    BatchLines,
    LineRecord,
    active_marker,
    batch_object,
    file_data,
    file_object,
    line_job_id,
    line_record,
    owner_entry,
)
from shared.storage.file_store import FileStore

pytestmark = pytest.mark.unit


def test_the_layout_names_each_object_and_an_owners_entry_safely() -> None:
    assert (file_object("file-1"), file_data("file-1")) == ("files/file-1.json", "files/file-1.data")
    assert (batch_object("b1"), active_marker("b1")) == ("batches/b1/batch.json", "active/b1")
    assert owner_entry("tenant:research/../x", "files", "f1") == "owners/tenant-research----x/files/f1"
    # Lines listed by name come in their order.
    assert sorted(line_record("b1", n, "ok") for n in (10, 9, 100)) == [
        "batches/b1/lines/0000009.ok", "batches/b1/lines/0000010.ok", "batches/b1/lines/0000100.ok",
    ]  # fmt: skip


def test_a_lines_job_id_is_the_same_for_the_same_batch_and_custom_id() -> None:
    assert line_job_id("b1", "req-1") == line_job_id("b1", "req-1")
    assert len({line_job_id("b1", "req-1"), line_job_id("b1", "req-2"), line_job_id("b2", "req-1")}) == 3
    assert line_job_id("b1", "a" * 10_000).startswith("b1-") and len(line_job_id("b1", "a" * 10_000)) == 27


def test_a_lines_record_is_its_answer_before_its_failure(tmp_path: Path) -> None:
    lines = BatchLines(FileStore(str(tmp_path)))
    assert lines.read("b1", 0) is None and lines.finished("b1") == {}
    lines.write_failure("b1", 0, "ModelServerTimeout", "slow", 504)
    assert lines.read("b1", 0) == LineRecord(0, None, {"exc_type": "ModelServerTimeout", "message": "slow",
                                                       "status": 504})  # fmt: skip
    lines.write_answer("b1", 0, {"content": "hi"})  # a second run answered
    lines.write_failure("b1", 1, "InvalidJob", "bad", 422)
    assert lines.read("b1", 0) == LineRecord(0, {"content": "hi"}, None)
    assert lines.finished("b1") == {0: "ok", 1: "err"}


def test_a_stopped_batch_says_why_and_when(tmp_path: Path) -> None:
    lines = BatchLines(FileStore(str(tmp_path)))
    assert lines.stopped("b1") is None and lines.stop_mark("b1") is None
    lines.stop("b1", "expired", 1700000000)
    assert lines.stopped("b1") == "expired" and lines.stop_mark("b1") == {"why": "expired", "at": 1700000000}
