"""A webhook receiver a test controls: a real HTTP server on 127.0.0.1 that records
each delivery (headers and body as received) and answers what the test says."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from testing.fake_model_server import free_port


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes
    status: int  # what the receiver answered


class WebhookReceiver:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hooks"
        self.received: list[Received] = []
        self.answers: list[int] = []  # answered in turn before 200 (e.g. [503, 503])
        self.redirect_to: str | None = None  # answer 302 with this Location
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    async def _hook(self, request: Request) -> Response:
        body = await request.body()
        status = self.answers.pop(0) if self.answers else 200
        headers = {"location": self.redirect_to} if self.redirect_to else {}
        if self.redirect_to:
            status = 302
        self.received.append(Received(dict(request.headers), body, status))
        return Response(b"ok" if status < 300 else b"not now", status_code=status, headers=headers)

    def start(self) -> WebhookReceiver:
        app = Starlette(routes=[Route("/hooks", self._hook, methods=["POST"])])
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True, name="webhook-receiver")
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("webhook receiver did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None

    def delivered(self, kind: str | None = None) -> list[Received]:
        """The deliveries answered 2xx (of events of type `kind`)."""
        return [r for r in self.received if r.status < 300 and (kind is None or f'"type":"{kind}"'.encode() in r.body)]

    def wait_for(self, count: int, kind: str | None = None, timeout: float = 30) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.delivered(kind)
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"{count} deliveries of {kind} expected, got {self.received}")
