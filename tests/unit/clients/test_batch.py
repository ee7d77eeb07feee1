"""The batch command against a gateway speaking OpenAI's Files and Batch API
(`httpx.MockTransport`): upload, create, progress, downloads, exit status, Ctrl-C.
Against the real gateway: tests/integration/api/test_batches.py."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from clients.batch import Gateway, progress_line, run_batch

pytestmark = pytest.mark.unit


class FakeGateway:
    """Files and batches in memory; a batch goes through `statuses` one poll at a time."""

    def __init__(self, statuses: list[dict[str, Any]], interrupt_at: int | None = None) -> None:
        self.statuses = statuses
        self.interrupt_at = interrupt_at  # the poll that meets a Ctrl-C
        self.polls = 0
        self.requests: list[httpx.Request] = []
        self.files = {"file-out": b'{"custom_id": "a"}\n{"custom_id": "b"}\n', "file-err": b'{"custom_id": "c"}\n'}
        self.cancelled = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path == "/v1/files" and request.method == "POST":
            return httpx.Response(200, json={"id": "file-in", "object": "file"})
        if path == "/v1/batches" and request.method == "POST":
            return httpx.Response(200, json={"id": "batch_1", **self.statuses[0]})
        if path == "/v1/batches/batch_1/cancel":
            self.cancelled = True
            return httpx.Response(200, json={"id": "batch_1", "status": "cancelling"})
        if path == "/v1/batches/batch_1":
            self.polls += 1
            if self.polls == self.interrupt_at:
                raise KeyboardInterrupt
            if self.cancelled:
                return httpx.Response(200, json={"id": "batch_1", "status": "cancelled", "output_file_id": "file-out"})
            return httpx.Response(200, json={"id": "batch_1", **self.statuses[min(self.polls, len(self.statuses) - 1)]})
        if path.startswith("/v1/files/") and path.endswith("/content"):
            return httpx.Response(200, content=self.files[path.split("/")[3]])
        return httpx.Response(404, json={"error": {"message": f"no route {path}"}})


def counts(total: int, completed: int, failed: int) -> dict[str, int]:
    return {"total": total, "completed": completed, "failed": failed}


def run(tmp_path: Path, fake: FakeGateway) -> tuple[int, str]:
    requests = tmp_path / "requests.jsonl"
    requests.write_text('{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n')
    out = io.StringIO()
    gateway = Gateway("http://gateway:8000/", "sk-1", transport=httpx.MockTransport(fake))
    return run_batch(gateway, requests, "/v1/chat/completions", "24h", 0, out), out.getvalue()


def test_a_batch_is_uploaded_run_and_its_output_and_errors_downloaded_beside_its_input(tmp_path: Path) -> None:
    fake = FakeGateway([
        {"status": "validating", "request_counts": counts(0, 0, 0)},
        {"status": "in_progress", "request_counts": counts(3, 1, 0)},
        {"status": "completed", "request_counts": counts(3, 2, 1), "output_file_id": "file-out",
         "error_file_id": "file-err", "errors": {"data": [{"line": 3, "message": "bad body"}]}},
    ])  # fmt: skip
    status, said = run(tmp_path, fake)
    assert status == 1  # some lines failed
    assert (tmp_path / "requests.output.jsonl").read_bytes() == fake.files["file-out"]
    assert (tmp_path / "requests.errors.jsonl").read_bytes() == fake.files["file-err"]
    assert "output: 2 lines in" in said and "errors: 1 lines in" in said and "line 3: bad body" in said
    upload, create = fake.requests[:2]
    assert upload.headers["authorization"] == "Bearer sk-1" and b'name="purpose"\r\n\r\nbatch' in upload.content
    assert json.loads(create.content) == {"input_file_id": "file-in", "endpoint": "/v1/chat/completions",
                                          "completion_window": "24h"}  # fmt: skip


def test_a_batch_whose_every_line_succeeded_exits_0_and_one_that_did_not_complete_2(tmp_path: Path) -> None:
    done = FakeGateway([{"status": "completed", "request_counts": counts(2, 2, 0), "output_file_id": "file-out"}])
    assert run(tmp_path, done)[0] == 0
    expired = FakeGateway([{"status": "in_progress"}, {"status": "expired", "request_counts": counts(2, 1, 0)}])
    status, said = run(tmp_path, expired)
    assert status == 2 and "batch batch_1: expired" in said


def test_ctrl_c_cancels_the_batch_and_still_downloads_what_finished(tmp_path: Path) -> None:
    fake = FakeGateway([{"status": "in_progress", "request_counts": counts(4, 1, 0)}], interrupt_at=2)
    status, said = run(tmp_path, fake)
    assert fake.cancelled and status == 2 and "cancelling the batch" in said
    assert (tmp_path / "requests.output.jsonl").exists()


def test_a_refusal_stops_the_command_with_the_gateways_message(tmp_path: Path) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(413, json={"error": {"message": "file too large"}})

    gateway = Gateway("http://gateway:8000", None, transport=httpx.MockTransport(refuse))
    requests = tmp_path / "r.jsonl"
    requests.write_text("{}\n")
    with pytest.raises(SystemExit, match=r"error: POST /v1/files: 413: file too large"):
        run_batch(gateway, requests, "/v1/chat/completions", "24h", 0, io.StringIO())


def test_the_progress_line_counts_finished_lines_of_all() -> None:
    line = progress_line({"status": "in_progress", "request_counts": counts(240, 100, 20)}, 0.0, width=10)
    assert line.startswith("[#####-----] 120/240  20 failed  in_progress  ")
    assert progress_line({"status": "validating"}, 0.0, width=4).startswith("[----] 0/0")
