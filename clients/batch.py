"""A batch from the command line.

    python -m clients.batch requests.jsonl [--url URL] [--key KEY] [--endpoint /v1/completions]

It runs a JSONL file of requests (OpenAI's batch input format) end to end:
uploads it, creates the batch, shows its progress live (lines completed and failed),
and downloads its output and errors beside the input (``requests.output.jsonl``,
``requests.errors.jsonl``). Ctrl-C cancels the batch; the lines that finished are
still downloaded. The URL and key default to ``LLM_API_URL`` and ``LLM_API_KEY``.
Exit status: 0 when every line succeeded, 1 when some failed, 2 when the batch did
not complete (failed, expired, cancelled) or could not be run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import httpx

FINISHED = {"completed", "failed", "expired", "cancelled"}


class Gateway:
    """The few calls of OpenAI's Files and Batch API the command makes."""

    def __init__(
        self, url: str, key: str | None, timeout: float = 60, transport: httpx.BaseTransport | None = None
    ) -> None:
        """`transport`: httpx's own unless given (a test's gateway)."""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.Client(
            base_url=url.rstrip("/") + "/v1", headers=headers, timeout=timeout, transport=transport
        )

    def _checked(self, answer: httpx.Response) -> Any:
        if answer.status_code >= 400:
            try:
                message = answer.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = answer.text[:500]
            raise SystemExit(
                f"error: {answer.request.method} {answer.request.url.path}: {answer.status_code}: {message}"
            )
        return answer.json() if answer.headers.get("content-type", "").startswith("application/json") else answer

    def upload(self, path: Path) -> dict[str, Any]:
        with path.open("rb") as given:
            return self._checked(
                self._http.post("/files", files={"file": (path.name, given)}, data={"purpose": "batch"})
            )

    def create(self, file_id: str, endpoint: str, window: str) -> dict[str, Any]:
        body = {"input_file_id": file_id, "endpoint": endpoint, "completion_window": window}
        return self._checked(self._http.post("/batches", json=body))

    def batch(self, batch_id: str) -> dict[str, Any]:
        return self._checked(self._http.get(f"/batches/{batch_id}"))

    def cancel(self, batch_id: str) -> dict[str, Any]:
        return self._checked(self._http.post(f"/batches/{batch_id}/cancel"))

    def download(self, file_id: str, path: Path) -> int:
        """Write the file to `path`; its number of lines."""
        lines = 0
        with self._http.stream("GET", f"/files/{file_id}/content") as answer, path.open("wb") as out:
            if answer.status_code >= 400:
                answer.read()
                self._checked(answer)
            for chunk in answer.iter_bytes():
                out.write(chunk)
                lines += chunk.count(b"\n")
        return lines


def progress_line(batch: dict[str, Any], started: float, width: int = 30) -> str:
    """``[######------]  120/240  3 failed  in_progress  41.2 lines/s``"""
    counts = batch.get("request_counts") or {}
    total, done, failed = counts.get("total") or 0, counts.get("completed") or 0, counts.get("failed") or 0
    filled = int(width * (done + failed) / total) if total else 0
    rate = (done + failed) / max(time.monotonic() - started, 1e-9)
    return (
        f"[{'#' * filled}{'-' * (width - filled)}] {done + failed:>{len(str(total))}}/{total}"
        f"  {failed} failed  {batch['status']}  {rate:.1f} lines/s"
    )


def run_batch(gateway: Gateway, path: Path, endpoint: str, window: str, poll: float, out: TextIO) -> int:
    """Run the file's requests as a batch, showing progress on `out`; the exit status."""
    uploaded = gateway.upload(path)
    batch = gateway.create(uploaded["id"], endpoint, window)
    print(f"{path.name}: uploaded as {uploaded['id']}; batch {batch['id']}", file=out)
    started = time.monotonic()
    live = out.isatty()
    try:
        while batch["status"] not in FINISHED:
            line = progress_line(batch, started)
            print(f"\r{line}" if live else line, end="" if live else "\n", file=out, flush=True)
            time.sleep(poll)
            batch = gateway.batch(batch["id"])
    except KeyboardInterrupt:
        print("\ncancelling the batch (the lines that finished are kept)...", file=out)
        batch = gateway.cancel(batch["id"])
        while batch["status"] not in FINISHED:
            time.sleep(poll)
            batch = gateway.batch(batch["id"])
    print(("\r" if live else "") + progress_line(batch, started), file=out)
    stem = path.with_suffix("") if path.suffix == ".jsonl" else path
    for kind, key in (("output", "output_file_id"), ("errors", "error_file_id")):
        if batch.get(key):
            target = stem.with_name(f"{stem.name}.{kind}.jsonl")
            print(f"{kind}: {gateway.download(batch[key], target)} lines in {target}", file=out)
    for error in ((batch.get("errors") or {}).get("data") or [])[:20]:
        print(f"line {error.get('line')}: {error.get('message')}", file=out)
    counts = batch.get("request_counts") or {}
    print(f"batch {batch['id']}: {batch['status']}", file=out)
    if batch["status"] != "completed":
        return 2
    return 1 if counts.get("failed") else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clients.batch", description=__doc__.split("\n\n")[0])
    parser.add_argument("input", type=Path, help="requests, one JSON object per line (OpenAI's batch input)")
    parser.add_argument("--url", default=os.environ.get("LLM_API_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--key", default=os.environ.get("LLM_API_KEY"), help="API key (default: LLM_API_KEY)")
    parser.add_argument("--endpoint", default=None, help="default: the url of the file's first request")
    parser.add_argument("--window", default="24h", help="completion window (default 24h)")
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between progress updates")
    args = parser.parse_args(argv)
    endpoint = args.endpoint
    if endpoint is None:
        with args.input.open("rb") as given:
            first = next((line for line in given if line.strip()), b"{}")
        try:
            endpoint = json.loads(first).get("url") or "/v1/chat/completions"
        except (ValueError, AttributeError):
            endpoint = "/v1/chat/completions"  # the upload names what is wrong with the file
    return run_batch(Gateway(args.url, args.key), args.input, endpoint, args.window, args.poll, sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
