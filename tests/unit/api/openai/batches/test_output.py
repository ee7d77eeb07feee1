"""A finished batch's output and error files (api/openai/batches/output.py): each line's
answer or failure in OpenAI's format and the input's order, and the lines a stopped
batch never ran."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from api.openai.batches.input import InputLine
from api.openai.batches.output import render_output
from shared.contract import TaskName
from shared.contract.embeddings import pack_vector
from shared.storage.batch_files import BatchLines, line_job_id
from shared.storage.file_store import FileStore

pytestmark = pytest.mark.unit


def line(index: int, task: TaskName = TaskName.CHAT, asked: dict[str, Any] | None = None) -> InputLine:
    return InputLine(index, index + 1, f"req-{index}", "/v1/x", task, {}, "m", asked)


def jsonl(raw: bytes) -> list[dict[str, Any]]:
    return [json.loads(text) for text in raw.splitlines()]


def test_each_lines_answer_or_failure_in_order_and_the_lines_never_run(tmp_path: Path) -> None:
    store = FileStore(str(tmp_path))
    lines = BatchLines(store)
    lines.write_answer("batch_1", 0, {"content": "hi", "finish_reason": "stop"})
    lines.write_failure("batch_1", 1, "ModelServerRejected", "no such model", 404)
    lines.write_answer("batch_1", 2, {"embeddings": [pack_vector([0.5])]})
    lines.write_answer("batch_1", 3, {"content": "r", "finish_reason": "stop"})
    given = [line(0), line(1), line(2, TaskName.EMBED, {"encoding_format": "float"}), line(3, asked={}), line(4)]
    output, errors = render_output(store, "batch_1", given, {0: "ok", 1: "err", 2: "ok", 3: "ok"}, "cancelled")
    answered = jsonl(output)
    assert [a["custom_id"] for a in answered] == ["req-0", "req-2", "req-3"]
    assert answered[0]["response"]["status_code"] == 200 and answered[0]["response"]["request_id"] == line_job_id(
        "batch_1", "req-0")  # fmt: skip
    assert answered[0]["response"]["body"]["choices"][0]["message"]["content"] == "hi"
    assert answered[1]["response"]["body"]["data"][0]["embedding"] == [0.5]
    assert answered[2]["response"]["body"]["object"] == "response"
    failed, never = jsonl(errors)
    assert failed["response"]["status_code"] == 404 and failed["response"]["body"]["error"]["type"] == (
        "not_found_error") and failed["error"] is None  # fmt: skip
    assert never["custom_id"] == "req-4" and never["error"]["code"] == "batch_cancelled"
    assert answered[0]["id"].startswith("batch_req_") and len({a["id"] for a in answered}) == 3
