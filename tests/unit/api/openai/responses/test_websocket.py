"""The Responses API's WebSocket mode (api/openai/responses/websocket.py): the key checked
on the upgrade, one response after another as a stream's events, the connection's own
conversation for ``previous_response_id``, and each refusal one ``error`` event that
leaves the connection open. The connection is driven through the app's ASGI interface
in process; the job parts are the real ones over a fake Redis and broker
(tests/unit/api/edge.py), whose worker the test plays."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from api.http.route_class import Edge
from api.limits import request_models
from api.openai.responses.websocket import ResponsesWebSocket, websocket_router
from api.tenancy.guard import Guard
from shared.config import Config
from shared.contract import CANCEL, STREAM_END, STREAM_INDEX, STREAM_TEXT
from tests.unit.api.edge import Parts, Sent, config, running_parts
from tests.unit.api.openai.responses.served import responses_of

pytestmark = pytest.mark.unit

TENANTS = """tenants:
  - {name: alpha, keys: [alpha-key]}
  - {name: beta, keys: [beta-key]}
"""


class Socket:
    """The client's end of one WebSocket connection to `app`, over ASGI: what it sends
    queued for the app, what the app sends read back in order."""

    def __init__(self, app: FastAPI, key: str | None, denials: bool = True) -> None:
        headers = [(b"authorization", f"Bearer {key}".encode())] if key else []
        scope = {
            "type": "websocket", "asgi": {"version": "3.0", "spec_version": "2.4"}, "scheme": "ws",
            "path": "/v1/responses", "raw_path": b"/v1/responses", "query_string": b"", "root_path": "",
            "headers": headers, "client": ("10.0.0.1", 5000), "server": ("127.0.0.1", 8000), "subprotocols": [],
            "extensions": {"websocket.http.response": {}} if denials else {},
        }  # fmt: skip
        self._to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._to_app.put_nowait({"type": "websocket.connect"})
        self.gone = False
        self.task = asyncio.create_task(app(scope, self._to_app.get, self._sent))

    async def _sent(self, message: dict[str, Any]) -> None:
        if self.gone:  # as a server's send fails once its client is gone (uvicorn's ClientDisconnected)
            raise OSError("the client is gone")
        await self._from_app.put(message)

    async def opening(self) -> dict[str, Any]:
        """The app's answer to the upgrade: its accept, its denial's start, or its close."""
        return await self._from_app.get()

    async def body(self) -> bytes:
        """A denial's body."""
        sent = b""
        while True:
            message = await self._from_app.get()
            sent += message.get("body", b"")
            if not message.get("more_body"):
                return sent

    def send(self, event: dict[str, Any] | str) -> None:
        text = event if isinstance(event, str) else json.dumps(event)
        self._to_app.put_nowait({"type": "websocket.receive", "text": text})

    async def message(self) -> dict[str, Any]:
        """The app's next message (a text frame, or its close)."""
        return await self._from_app.get()

    async def event(self) -> dict[str, Any]:
        message = await self.message()
        assert message["type"] == "websocket.send", message
        return json.loads(message["text"])

    async def until(self, *kinds: str) -> list[dict[str, Any]]:
        """Every event up to and including the first of one of those types."""
        got = [await self.event()]
        while got[-1]["type"] not in kinds:
            got.append(await self.event())
        return got

    async def leave(self) -> None:
        self._to_app.put_nowait({"type": "websocket.disconnect", "code": 1000})
        await self.task

    def drop(self) -> None:
        """The client goes away at once: whatever the app sends next fails."""
        self.gone = True
        self._to_app.put_nowait({"type": "websocket.disconnect", "code": 1006})


@asynccontextmanager
async def served(root: Path, **settings: Any) -> AsyncIterator[tuple[FastAPI, Parts]]:
    keys = root / "tenants.yaml"
    keys.write_text(TENANTS)
    async with running_parts(config(api_keys_file=str(keys), wait_timeout=5, **settings)) as parts:
        edge = Edge(parts.config, Guard(parts.config, parts.redis, parts.metrics), parts.metrics)  # type: ignore[arg-type]
        socket = ResponsesWebSocket(edge, request_models(parts.config).responses, responses_of(parts, root / "store"),
                                    parts.runner)  # fmt: skip
        app = FastAPI()
        app.include_router(websocket_router(socket))
        yield app, parts


def streams(parts: Parts, answer: Callable[[Sent], dict[str, Any] | None]) -> None:
    """The worker: each job's answer streamed (its text, its end) and stored; None fails it."""

    def run(sent: Sent) -> None:
        said = answer(sent)
        if said is None:
            failure = {"exc_type": "ModelServerRejected", "exc_message": ["the model refused", 400],
                       "exc_module": "shared.contract"}  # fmt: skip
            parts.answer(sent, failure, "FAILURE")
            return
        stream = parts.config.keys.stream(sent.task_id)
        parts.redis.xadd_now(stream, {STREAM_INDEX: 0, STREAM_TEXT: said["content"]})
        parts.redis.xadd_now(stream, {STREAM_END: json.dumps(said)})
        parts.answer(sent, said)

    parts.broker.on_send = run


def echo(sent: Sent) -> dict[str, Any] | None:
    messages = sent.job["openai"]["messages"]
    return {"content": f"echo: {messages[-1]['content']}", "finish_reason": "stop",
            "usage": {"prompt_tokens": len(messages), "completion_tokens": 1}}  # fmt: skip


def create(**fields: Any) -> dict[str, Any]:
    return {"type": "response.create", "model": "smollm2-135m-instruct", **fields}


def test_an_upgrade_without_a_valid_key_is_refused_with_openais_error(tmp_path: Path) -> None:
    async def main() -> None:
        async with served(tmp_path) as (app, _):
            for key in (None, "wrong-key"):
                socket = Socket(app, key)
                start = await socket.opening()
                assert (start["type"], start["status"]) == ("websocket.http.response.start", 401)
                assert json.loads(await socket.body())["error"]["type"] == "authentication_error"
                await socket.task
            # A server that cannot answer an upgrade with HTTP: closed before the handshake.
            socket = Socket(app, "wrong-key", denials=False)
            assert (await socket.opening())["type"] == "websocket.close"
            await socket.task

    asyncio.run(main())


def test_a_tenant_holds_at_most_its_connections_and_another_tenant_is_not_crowded_out(tmp_path: Path) -> None:
    async def main() -> None:
        async with served(tmp_path, responses_websockets_per_tenant=1) as (app, _):
            first = Socket(app, "alpha-key")
            assert (await first.opening())["type"] == "websocket.accept"
            second = Socket(app, "alpha-key")
            start = await second.opening()
            assert (start["type"], start["status"]) == ("websocket.http.response.start", 429)
            assert "RESPONSES_WEBSOCKETS_PER_TENANT" in json.loads(await second.body())["error"]["message"]
            await second.task
            other = Socket(app, "beta-key")
            assert (await other.opening())["type"] == "websocket.accept"
            await first.leave()
            again = Socket(app, "alpha-key")  # its place given back as the first left
            assert (await again.opening())["type"] == "websocket.accept"
            await again.leave()
            await other.leave()

    asyncio.run(main())


def test_responses_follow_one_another_each_a_streams_events_the_next_going_on_from_the_last(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with served(tmp_path) as (app, parts):
            streams(parts, echo)
            socket = Socket(app, "alpha-key")
            assert (await socket.opening())["type"] == "websocket.accept"
            socket.send(create(input="My name is Ada.", store=False, stream_id="lane-1"))
            first = await socket.until("response.completed")
            assert [event["type"] for event in first[:2]] == ["response.created", "response.in_progress"]
            assert [event["sequence_number"] for event in first] == list(range(len(first)))
            assert {event["stream_id"] for event in first} == {"lane-1"}
            done = first[-1]["response"]
            assert done["output"][0]["content"][0]["text"] == "echo: My name is Ada." and done["store"] is False
            # store: false: nothing of it is left in Redis once it ended...
            keys, key = parts.config.keys, f"alpha~{done['id']}"
            assert not {keys.response(key), keys.result(key), keys.stream(key)} & {*parts.redis.strings,
                                                                                  *parts.redis.streams}  # fmt: skip
            assert keys.job(key) not in parts.redis.hashes
            # ...and the connection goes on from it all the same, from its own memory.
            socket.send(create(input="What is my name?", previous_response_id=done["id"], store=False))
            second = await socket.until("response.completed")
            assert second[0]["sequence_number"] == 0 and "stream_id" not in second[0]
            assert [m["content"] for m in parts.broker.sent[-1].job["openai"]["messages"]] == [
                "My name is Ada.", "echo: My name is Ada.", "What is my name?"]  # fmt: skip
            assert all(sent.job["stream"] is True for sent in parts.broker.sent)
            await socket.leave()

    asyncio.run(main())


def test_a_response_the_connection_does_not_hold_is_previous_response_not_found_and_it_stays_open(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with served(tmp_path) as (app, parts):
            streams(parts, echo)
            elsewhere = Socket(app, "alpha-key")
            await elsewhere.opening()
            elsewhere.send(create(input="hi", store=False))
            unstored = (await elsewhere.until("response.completed"))[-1]["response"]["id"]
            await elsewhere.leave()
            socket = Socket(app, "alpha-key")
            await socket.opening()
            for prior in (unstored, "resp_unknown"):  # another connection's store: false; one never made
                socket.send(create(input="go on", previous_response_id=prior, stream_id="s"))
                refused = await socket.event()
                assert refused["type"] == "error" and refused["status"] == 400 and refused["stream_id"] == "s"
                assert refused["error"]["code"] == "previous_response_not_found"
                assert refused["error"]["param"] == "previous_response_id"
            # A stored response, of another connection: read from Redis, as over HTTP.
            socket.send(create(input="remember 7"))
            stored = (await socket.until("response.completed"))[-1]["response"]["id"]
            other = Socket(app, "alpha-key")
            await other.opening()
            other.send(create(input="which number?", previous_response_id=stored))
            assert (await other.until("response.completed"))[-1]["type"] == "response.completed"
            assert [m["content"] for m in parts.broker.sent[-1].job["openai"]["messages"]] == [
                "remember 7", "echo: remember 7", "which number?"]  # fmt: skip
            # Another tenant's: as unknown.
            theirs = Socket(app, "beta-key")
            await theirs.opening()
            theirs.send(create(input="x", previous_response_id=stored))
            assert (await theirs.event())["error"]["code"] == "previous_response_not_found"
            for each in (socket, other, theirs):
                await each.leave()

    asyncio.run(main())


def test_a_continuation_that_fails_evicts_the_response_it_named(tmp_path: Path) -> None:
    async def main() -> None:
        async with served(tmp_path) as (app, parts):
            streams(parts, lambda sent: None if "fail" in json.dumps(sent.job["openai"]) else echo(sent))
            socket = Socket(app, "alpha-key")
            await socket.opening()
            socket.send(create(input="hi", store=False))
            first = (await socket.until("response.completed"))[-1]["response"]["id"]
            socket.send(create(input="now fail", previous_response_id=first, store=False))
            failed = await socket.until("response.failed")
            assert failed[-1]["response"]["error"]["message"] == "the model refused"
            socket.send(create(input="again", previous_response_id=first, store=False))
            assert (await socket.event())["error"]["code"] == "previous_response_not_found"
            await socket.leave()

    asyncio.run(main())


def test_a_client_that_leaves_mid_response_cancels_it_as_a_streams_reader_does(tmp_path: Path) -> None:
    async def main() -> None:
        async with served(tmp_path, stream_leave_grace=0) as (app, parts):
            socket = Socket(app, "alpha-key")
            await socket.opening()
            socket.send(create(input="a long story"))
            await socket.until("response.in_progress")
            (sent,) = parts.broker.sent
            socket.drop()
            parts.redis.xadd_now(parts.config.keys.stream(sent.task_id), {STREAM_INDEX: 0, STREAM_TEXT: "Once"})
            await socket.task  # its next event failed to go: the connection ended
            while parts.runner._leaving:  # the runner's own tasks: the stream closed, its reader left
                await asyncio.gather(*parts.runner._leaving)
            assert [keys for script, keys, _ in parts.redis.ran if script == CANCEL] != []
            assert (await parts.store.status(sent.task_id))["status"] == "cancelled"

    asyncio.run(main())


@pytest.mark.parametrize(("event", "status", "code", "param"), [
    (create(input="x", background=True), 400, "invalid_request", "background"),
    (create(input="x", generate=False), 400, "invalid_request", "generate"),
    (create(input="x", temperature=7), 400, "invalid_request", "temperature"),
    (create(), 400, "invalid_request", None),
    ({"type": "response.cancel"}, 400, "invalid_request", None),
    (create(input="x", stream_id=""), 422, "invalid_request", None),
    ("not json", 422, "invalid_request", None),
    ("[1, 2]", 422, "invalid_request", None),
])  # fmt: skip
def test_a_refused_event_is_one_error_event_and_the_connection_goes_on(
    tmp_path: Path, event: dict[str, Any] | str, status: int, code: str, param: str | None
) -> None:
    async def main() -> None:
        async with served(tmp_path) as (app, parts):
            streams(parts, echo)
            socket = Socket(app, "alpha-key")
            await socket.opening()
            socket.send(event)
            refused = await socket.event()
            assert refused["type"] == "error" and refused["status"] == status, refused
            assert refused["error"]["code"] == code and refused["error"]["param"] == param, refused
            assert parts.broker.sent == []  # nothing queued
            socket.send(create(input="still here?", store=False))
            assert (await socket.until("response.completed"))[-1]["type"] == "response.completed"
            await socket.leave()

    asyncio.run(main())


def test_a_message_larger_than_a_body_may_be_is_refused(tmp_path: Path) -> None:
    async def main() -> None:
        async with served(tmp_path, max_body_bytes=2048) as (app, _):
            socket = Socket(app, "alpha-key")
            await socket.opening()
            socket.send(create(input="x" * 4096))
            refused = await socket.event()
            assert (refused["status"], refused["error"]["code"]) == (413, "request_too_large")
            assert "MAX_BODY_BYTES" in refused["error"]["message"]
            await socket.leave()

    asyncio.run(main())


def test_a_connection_past_its_time_is_told_so_and_closed(tmp_path: Path) -> None:
    async def main() -> None:
        async with served(tmp_path, responses_websocket_seconds=1) as (app, _):
            socket = Socket(app, "alpha-key")
            await socket.opening()
            told = await socket.event()  # after its second
            assert told["type"] == "error" and told["error"]["code"] == "websocket_connection_limit_reached"
            closed = await socket.message()
            assert (closed["type"], closed["code"]) == ("websocket.close", 1000)
            await socket.task

    asyncio.run(main())


def test_the_settings_default_to_openais_hour_and_a_bound_per_tenant() -> None:
    settings = Config(_env_file=None)  # type: ignore[call-arg]
    assert settings.responses_websocket_seconds == 3600 and settings.responses_websockets_per_tenant > 0
