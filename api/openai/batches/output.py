"""A finished batch's output and error files, in OpenAI's format and the input's order:
each line's answer (output) or failure (errors), and the lines a cancelled or expired
batch never ran (errors, coded ``batch_cancelled`` / ``batch_expired``)."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from api.http.statuses import ERROR_TYPES
from api.openai.batches.input import InputLine
from api.openai.chat.serving import whole_answer
from api.openai.embeddings.serving import embedding_answer
from api.openai.responses.objects import response_object
from shared.contract import TaskName
from shared.storage.batch_files import OK, line_job_id, line_record
from shared.storage.file_store import FileStore

NOT_RUN = {
    "batch_cancelled": "This request was not run: its batch was cancelled.",
    "batch_expired": "This request could not be executed before the completion window expired.",
}


def render_output(
    store: FileStore, batch_id: str, lines: list[InputLine], finished: dict[int, str], why: str | None
) -> tuple[bytes, bytes]:
    """The output and error files' content; `finished` is each line's outcome as its
    record says (OK or ERR), `why` what stopped the batch ("cancelled", "expired") if it
    did not complete."""
    output, errors = [], []
    for line in lines:
        job_id = line_job_id(batch_id, line.custom_id)
        head = {"id": f"batch_req_{hashlib.sha256(job_id.encode()).hexdigest()[:24]}", "custom_id": line.custom_id}
        outcome = finished.get(line.index)
        raw = store.get(line_record(batch_id, line.index, outcome)) if outcome else None
        if raw is None:
            code = f"batch_{why or 'expired'}"
            message = NOT_RUN.get(code, "This request was not run.")
            errors.append({**head, "response": None, "error": {"code": code, "message": message}})
            continue
        found = json.loads(raw)
        if outcome == OK:
            kind = "chat" if line.task == TaskName.CHAT else "completion"
            if line.task == TaskName.EMBED:
                encoding = (line.asked or {}).get("encoding_format", "float")
                body = embedding_answer(found, encoding, line.model)
            elif line.asked is not None:  # a /v1/responses line
                record = {"id": f"resp_{head['id'].removeprefix('batch_req_')}", "created_at": int(time.time()),
                          "model": line.model or "", "request": line.asked}  # fmt: skip
                body = response_object(record, "completed", found)
            else:
                body = whole_answer(kind, job_id, found, line.model)
            output.append({**head, "response": {"status_code": 200, "request_id": job_id, "body": body}, "error": None})
            continue
        status = int(found.get("status") or 500)
        error = {"message": found.get("message"), "type": ERROR_TYPES.get(status, "api_error"), "param": None,
                 "code": status}  # fmt: skip
        response = {"status_code": status, "request_id": job_id, "body": {"error": error}}
        errors.append({**head, "response": response, "error": None})
    return _jsonl(output), _jsonl(errors)


def _jsonl(records: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(record).encode() + b"\n" for record in records)
