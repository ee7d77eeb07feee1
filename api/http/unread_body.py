"""An answer sent before its request's body was read to its end closes the connection.

Without this, the server reads and drops the rest of the body to reach the next request
on the connection: a refused upload announcing gigabytes (a 401, a 404, a 405, before a
byte of it was wanted) was read whole. With ``Connection: close`` on the answer, the
connection ends with it, and the rest is never read. The gateway's own routes drain a
bounded part first (api/http/route_class.py), so that clients that write their whole
body before reading get the answer rather than a reset.
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class CloseAfterUnreadBody:
    """ASGI middleware: ``Connection: close`` on an answer whose request's body was not read whole."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length", b"0").strip()
        chunked = b"chunked" in headers.get(b"transfer-encoding", b"").lower()
        ended = not chunked and (not length.isdigit() or int(length) == 0)

        async def reading() -> Message:
            nonlocal ended
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                ended = True
            return message

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start" and not ended:
                kept: list[Any] = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
                message = {**message, "headers": [*kept, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, reading, sending)
