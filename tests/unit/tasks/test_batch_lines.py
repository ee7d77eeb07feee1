"""A batch's line run once: its outcome recorded before anything else, a line delivered
again answered from its record, a line of a stopped batch never started."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shared.contract import BatchLine, ModelServerRejected, ModelServerTimeout
from shared.storage.batch_files import BatchLines
from shared.storage.file_store import FileStore
from tasks.batch_lines import LineStopped, run_line

pytestmark = pytest.mark.unit

LINE = BatchLine(id="batch_1", line=4)


@pytest.fixture
def lines(tmp_path: Path) -> BatchLines:
    return BatchLines(FileStore(str(tmp_path)))


def test_a_lines_answer_is_recorded_and_a_second_delivery_is_answered_from_it(lines: BatchLines) -> None:
    runs: list[int] = []

    def run() -> dict[str, Any]:
        runs.append(1)
        return {"content": "hi"}

    assert run_line(lines, LINE, run) == {"content": "hi"}
    assert run_line(lines, LINE, run) == {"content": "hi"}
    assert len(runs) == 1 and lines.finished("batch_1") == {4: "ok"}


def test_a_lines_failure_is_recorded_with_the_status_a_request_would_get_and_raised_again(lines: BatchLines) -> None:
    def refused() -> dict[str, Any]:
        raise ModelServerRejected("no such model", 404)

    with pytest.raises(ModelServerRejected):
        run_line(lines, LINE, refused)
    record = lines.read("batch_1", 4)
    assert record is not None and record.failure == {"exc_type": "ModelServerRejected", "message": "no such model",
                                                      "status": 404}  # fmt: skip
    with pytest.raises(ModelServerRejected, match="no such model") as again:
        run_line(lines, LINE, lambda: pytest.fail("run again"))
    assert again.value.status_code == 404


def test_a_workers_own_error_is_not_the_lines_outcome(lines: BatchLines) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("bug")

    with pytest.raises(RuntimeError):
        run_line(lines, LINE, broken)
    assert lines.read("batch_1", 4) is None  # the API driving the batch records it
    assert run_line(lines, LINE, lambda: {"content": "ok"}) == {"content": "ok"}


def test_a_line_of_a_stopped_batch_never_starts_but_a_finished_one_is_still_answered(lines: BatchLines) -> None:
    lines.write_failure("batch_1", 1, "ModelServerTimeout", "slow", 504)
    lines.stop("batch_1", "cancelled", 1700000000)
    with pytest.raises(LineStopped, match="cancelled"):
        run_line(lines, LINE, lambda: pytest.fail("started"))
    with pytest.raises(ModelServerTimeout, match="slow"):
        run_line(lines, BatchLine(id="batch_1", line=1), lambda: pytest.fail("started"))
