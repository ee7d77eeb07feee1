"""One HTTP request through an ASGI app, in process: the body sent as the test says (in
chunks, announced or not), what the app read of it counted, and its answer recorded."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp, Message


@dataclass
class Answer:
    """What the app sent back, and how much of the body it read."""

    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    chunks_read: int = 0  # of the request's body

    def json(self) -> Any:
        return json.loads(self.body)


async def request(
    app: ASGIApp,
    method: str,
    path: str,
    body: bytes | list[bytes] = b"",
    headers: dict[str, str] | None = None,
    client: tuple[str, int] = ("10.0.0.1", 5000),
    announce: bool = True,
) -> Answer:
    """Send one request to `app`: its `body` whole, or in the chunks given (the last ends
    it); announced by Content-Length unless not `announce`."""
    chunks = [body] if isinstance(body, bytes) else body
    given = {k.lower(): v for k, v in (headers or {}).items()}
    if any(chunks) and "content-type" not in given:
        given["content-type"] = "application/json"
    if announce and "content-length" not in given:
        given["content-length"] = str(sum(len(chunk) for chunk in chunks))
    elif not announce:
        given["transfer-encoding"] = "chunked"
    path, _, query = path.partition("?")
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
        "headers": [(k.encode(), v.encode()) for k, v in given.items()], "client": client,
        "server": ("127.0.0.1", 8000),
    }  # fmt: skip
    answer = Answer()

    async def receive() -> Message:
        if answer.chunks_read < len(chunks):
            answer.chunks_read += 1
            more = answer.chunks_read < len(chunks)
            return {"type": "http.request", "body": chunks[answer.chunks_read - 1], "more_body": more}
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            answer.status = message["status"]
            answer.headers = {k.decode().lower(): v.decode() for k, v in message.get("headers", [])}
        elif message["type"] == "http.response.body":
            answer.body += message.get("body", b"")

    await app(scope, receive, send)
    return answer
