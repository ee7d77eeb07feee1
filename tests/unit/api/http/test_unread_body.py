"""An answer sent before its request's body was read to its end closes the connection
(api/http/unread_body.py), so the server never reads the rest of a refused upload."""

from __future__ import annotations

import asyncio

import pytest
from starlette.types import Receive, Scope, Send

from api.http.unread_body import CloseAfterUnreadBody
from tests.unit.api.http.asgi import Answer, request

pytestmark = pytest.mark.unit


async def refuses_unread(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 404, "headers": [(b"Connection", b"keep-alive")]})
    await send({"type": "http.response.body", "body": b"no"})


async def reads_all(scope: Scope, receive: Receive, send: Send) -> None:
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def send_to(app: object, body: bytes | list[bytes] = b"", **options: object) -> Answer:
    return asyncio.run(request(CloseAfterUnreadBody(app), "POST", "/x", body, **options))  # type: ignore[arg-type]


def test_an_answer_before_the_body_was_read_closes_the_connection_and_only_once() -> None:
    answer = send_to(refuses_unread, b"x" * 10_000)
    assert answer.status == 404 and answer.chunks_read == 0 and answer.headers["connection"] == "close"
    chunked = send_to(refuses_unread, [b"x", b"y"], announce=False)
    assert chunked.headers["connection"] == "close"


def test_an_answer_after_the_body_was_read_whole_keeps_the_connection() -> None:
    assert "connection" not in send_to(reads_all, [b"x" * 100, b"y" * 100]).headers
    assert "connection" not in send_to(reads_all, [b"a", b"b"], announce=False).headers
    # No body at all: nothing left unread.
    assert send_to(refuses_unread, b"").headers["connection"] == "keep-alive"
