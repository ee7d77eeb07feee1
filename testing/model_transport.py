"""A model server at the edge of a unit test, as the worker's client reaches it: a
transport (tasks/model/http.py's `Transport`) that answers what the test says, in
OpenAI's protocol, and records what it was sent. For a real server on a port, see
fake_model_server.py."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Mapping
from typing import Any

import httpx

from tasks.model.http import Reply


class ModelTransport:
    """Answers from a list (each a response or an exception to raise), then a short
    streamed answer; `/v1/models` lists `models` when nothing else is listed."""

    def __init__(self, *answers: httpx.Response | BaseException, models: list[str] | None = None) -> None:
        self.answers = list(answers)
        self.models = models if models is not None else ["served-a"]
        self.sent: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def send(
        self,
        method: str,
        path: str,
        body: bytes | None,
        timeout: float,
        connect_timeout: float,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        with self._lock:
            self.sent.append({"method": method, "path": path, "body": json.loads(body) if body else None,
                              "timeout": timeout, "connect_timeout": connect_timeout})  # fmt: skip
            if path == "/v1/models" and not self.answers:
                return reply(httpx.Response(200, json={"data": [{"id": m} for m in self.models]}))
            answer = self.answers.pop(0) if self.answers else streamed("ok")
        if isinstance(answer, BaseException):
            raise answer
        return reply(answer)

    def close(self) -> None:
        pass

    @property
    def posts(self) -> list[dict[str, Any]]:
        return [sent for sent in self.sent if sent["method"] == "POST"]


def reply(response: httpx.Response) -> Reply:
    """A reply already in memory, read as the client reads one from a socket."""
    return Reply(response.status_code, response.reason_phrase, dict(response.headers), io.BytesIO(response.content))


def streamed(*pieces: str, finish: str | None = "stop", model: str = "m") -> httpx.Response:
    """A streamed chat answer of `pieces`; without `finish` it is cut off before its end."""
    chunks = [{"model": model, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]}
              for p in pieces]  # fmt: skip
    ending = ""
    if finish is not None:
        chunks.append({"model": model, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        ending = "data: [DONE]\n\n"
    body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + ending
    return httpx.Response(200, content=body.encode(), headers={"content-type": "text/event-stream"})


def error(status: int, message: str, **headers: str) -> httpx.Response:
    """An OpenAI-style error answer."""
    return httpx.Response(status, json={"error": {"message": message}}, headers=headers)
