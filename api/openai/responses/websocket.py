"""WebSocket mode of the Responses API: one connection to ``/v1/responses`` carries one
response after another, each asked with a ``response.create`` event (the body of
``POST /v1/responses``, without ``stream`` or ``background``) and answered with the
same typed events a stream has, as JSON messages.

- The key is checked on the upgrade (its ``Authorization`` header): without a valid
  one, the upgrade is refused with 401 (OpenAI's error body) and no connection is made.
  Each ``response.create`` is a request as ``POST /v1/responses`` is: the key's rate
  limit, the tenant's quotas and limits apply to it. A tenant holds at most
  RESPONSES_WEBSOCKETS_PER_TENANT connections open on one API process (429 past it).
- The connection keeps the conversation its latest response ended with, in its own
  memory: a ``previous_response_id`` naming it goes on from there, ``store: false`` or
  not. An older stored response is read from Redis as over HTTP; anything else (a
  ``store: false`` response of another connection, one evicted, another tenant's) is the
  error ``previous_response_not_found``. A continuation that fails evicts what it
  referred to.
- A failure before a response begins is one ``error`` event (``status``, and ``error``
  with ``type``, ``code``, ``message``, ``param``); the connection stays open. After
  RESPONSES_WEBSOCKET_SECONDS the connection ends with ``websocket_connection_limit_reached``.

See docs/responses.md#websocket-mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.websockets import WebSocketDisconnect, WebSocketState

from api.errors import (
    BadRequest,
    BodyTooLarge,
    GatewayError,
    InvalidInput,
    InvalidJson,
    ResponseNotFound,
    TooManyRequests,
)
from api.http.json_body import loads
from api.http.route_class import Edge
from api.http.statuses import ERROR_TYPES, Refusal, refusal
from api.jobs.runner import JobRunner
from api.observability.server_timing import Timing
from api.openai.http import openai_error
from api.openai.responses.objects import ResponseEvents
from api.openai.responses.serving import Responses
from api.openai.responses.translate import conversation_after
from api.openai.responses.types import ResponsesRequest
from shared.tenants import Tenant

access = logging.getLogger("api.access")
log = logging.getLogger(__name__)

ENDPOINT = "/v1/responses"
# An error's machine-readable code by its status (the `code` of an `error` event).
CODES = {400: "invalid_request", 401: "invalid_api_key", 403: "forbidden", 404: "not_found", 409: "conflict",
         413: "request_too_large", 422: "invalid_request", 429: "rate_limit_exceeded",
         503: "service_unavailable", 504: "timeout"}  # fmt: skip
# HTTP's transport fields, not a WebSocket's: left out (background: refused when asked).
TRANSPORT_FIELDS = ("type", "stream", "stream_options", "stream_id", "background", "generate")


class TurnRefused(Exception):
    """A ``response.create`` answered with one error event, its code of its own."""

    def __init__(self, refused: Refusal, code: str | None = None) -> None:
        super().__init__(refused.message)
        self.refused = refused
        self.code = code or CODES.get(refused.status, "server_error")


@dataclass
class Kept:
    """The conversation the connection's latest response ended with, by its id."""

    response_id: str | None = None
    conversation: list[dict[str, Any]] = field(default_factory=list)

    def of(self, response_id: str) -> list[dict[str, Any]] | None:
        return self.conversation if response_id == self.response_id else None

    def keep(self, response_id: str, conversation: list[dict[str, Any]]) -> None:
        self.response_id, self.conversation = response_id, conversation

    def evict(self, response_id: str | None) -> None:
        if response_id is not None and response_id == self.response_id:
            self.response_id, self.conversation = None, []


class ResponsesWebSocket:
    """Serves the WebSocket mode's connections (one instance per API process)."""

    def __init__(self, edge: Edge, body: type[ResponsesRequest], responses: Responses, runner: JobRunner) -> None:
        self._edge = edge
        self._body = body  # the deployment's request body (its limits)
        self._responses = responses
        self._runner = runner
        self._open: Counter[str] = Counter()  # this process's open connections, by tenant

    async def serve(self, websocket: WebSocket) -> None:
        """One connection, from its upgrade to its end."""
        authorization = websocket.headers.get("authorization", "")
        client = websocket.client.host if websocket.client else ""
        try:
            tenant = await self._edge.guard.admit(authorization, client)
        except GatewayError as exc:
            await self._deny(websocket, refusal(exc))
            return
        most = self._edge.config.responses_websockets_per_tenant
        if most and self._open[tenant.name] >= most:
            await self._deny(websocket, refusal(TooManyRequests(
                f"{most} WebSocket connections of this tenant are open on this API process"
                " (RESPONSES_WEBSOCKETS_PER_TENANT): close one, or use POST /v1/responses"
            )))  # fmt: skip
            return
        self._open[tenant.name] += 1
        try:
            await self._connected(websocket, authorization, client)
        finally:
            self._open[tenant.name] -= 1

    async def _connected(self, websocket: WebSocket, authorization: str, client: str) -> None:
        """The connection, let in: its turns until it ends."""
        await websocket.accept()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._edge.config.responses_websocket_seconds
        kept = Kept()
        try:
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        message = await websocket.receive()
                except TimeoutError:
                    limit = self._edge.config.responses_websocket_seconds
                    refused = Refusal(400, f"this connection reached its limit of {limit} seconds: open another",
                                      "ConnectionLimit")  # fmt: skip
                    await websocket.send_text(_error_event(refused, "websocket_connection_limit_reached", None))
                    await websocket.close(1000)
                    return
                if message["type"] == "websocket.disconnect":
                    return
                raw = message.get("text")
                if raw is None:
                    raw = message.get("bytes") or b""
                await self._turn(websocket, raw, authorization, client, kept)
        except (WebSocketDisconnect, OSError):
            return  # the client left; a response it was reading is cancelled as a stream's reader leaving is
        finally:
            if websocket.application_state == WebSocketState.CONNECTED:
                with contextlib.suppress(RuntimeError, OSError):  # closed meanwhile
                    await websocket.close(1000)

    async def _deny(self, websocket: WebSocket, refused: Refusal) -> None:
        """Refuse the upgrade: an HTTP answer in OpenAI's format where the server can send
        one, else a close before the handshake (a 403)."""
        if "websocket.http.response" in websocket.scope.get("extensions", {}):
            answer = JSONResponse(openai_error(refused), status_code=refused.status, headers=refused.headers)
            await websocket.send_denial_response(answer)
        else:
            await websocket.close(1008, refused.message[:120])

    async def _turn(self, websocket: WebSocket, raw: str | bytes, authorization: str, client: str, kept: Kept) -> None:
        """One ``response.create``: its events, or one error event."""
        started = time.perf_counter()
        metrics = self._edge.metrics
        timing = Timing(started, metrics=metrics)
        event: dict[str, Any] = {}
        status, tenant_name = 200, None
        try:
            try:
                event = self._event(raw)
                tenant = await self._edge.guard.admit(authorization, client)
                tenant_name = tenant.name
                body = self._request(event)
                status = await self._run(websocket, tenant, body, event, kept, timing)
            except TurnRefused as turn:
                kept.evict(_prior(event))
                status = turn.refused.status
                await websocket.send_text(_error_event(turn.refused, turn.code, event.get("stream_id")))
            except GatewayError as exc:
                kept.evict(_prior(event))
                refused = refusal(exc)
                code = "previous_response_not_found" if isinstance(exc, ResponseNotFound) else None
                if code is not None:  # as OpenAI answers it: a bad request naming the field
                    refused = Refusal(400, refused.message, refused.cause, param="previous_response_id")
                status = refused.status
                await websocket.send_text(_error_event(refused, code, event.get("stream_id")))
            except (WebSocketDisconnect, OSError):
                raise  # the client left: the connection ends (serve)
            except Exception:  # one turn's fault: answered, and the connection goes on
                log.exception("a response.create on a WebSocket failed")
                kept.evict(_prior(event))
                status = 500
                refused = Refusal(500, "the gateway failed to answer this response.create", "InternalError")
                await websocket.send_text(_error_event(refused, None, event.get("stream_id")))
        finally:
            seconds = time.perf_counter() - started
            metrics.requests.labels(ENDPOINT, "WEBSOCKET", str(status)).inc()
            access.info(
                "WEBSOCKET %s response.create %d", ENDPOINT, status,
                extra={**({"tenant": tenant_name} if tenant_name else {}), **(timing.job or {}), "status": status,
                       "seconds": round(seconds, 4)},
            )  # fmt: skip

    def _event(self, raw: str | bytes) -> dict[str, Any]:
        """The client's event, read as strictly as a request body."""
        config = self._edge.config
        size = len(raw.encode() if isinstance(raw, str) else raw)
        if size > config.max_body_bytes:
            raise BodyTooLarge(f"a message larger than {config.max_body_bytes} bytes (MAX_BODY_BYTES)")
        if isinstance(raw, bytes):
            try:
                raw = raw.decode()
            except UnicodeDecodeError:
                raise InvalidInput("a message of UTF-8 JSON: a response.create event") from None
        try:
            event = loads(raw, config.max_json_depth, where="event")
        except json.JSONDecodeError as exc:
            raise InvalidJson(f"event: not JSON ({exc.msg} at character {exc.pos})") from None
        if not isinstance(event, dict):
            raise InvalidInput("event: a JSON object, a response.create event")
        if event.get("type") != "response.create":
            raise BadRequest(f"type: {event.get('type')!r} is not served; send response.create")
        stream_id = event.get("stream_id")
        if stream_id is not None and not (isinstance(stream_id, str) and 0 < len(stream_id) <= 256):
            raise InvalidInput("stream_id: a string of 1 to 256 characters")
        return event

    def _request(self, event: dict[str, Any]) -> ResponsesRequest:
        """The response the event asks for, checked as ``POST /v1/responses``'s body is."""
        if event.get("background"):
            raise TurnRefused(Refusal(400, "background: not over a WebSocket (use POST /v1/responses)",
                                      "InvalidRequest", param="background"))  # fmt: skip
        if event.get("generate") is False:
            raise TurnRefused(Refusal(400, "generate: false (a warm-up) is not served; send the turn itself",
                                      "InvalidRequest", param="generate"))  # fmt: skip
        asked = {name: value for name, value in event.items() if name not in TRANSPORT_FIELDS}
        try:
            return self._body.model_validate(asked)
        except ValidationError as exc:
            errors = [{**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)]
            refused = refusal(RequestValidationError(errors))
            raise TurnRefused(Refusal(400, refused.message, refused.cause, param=refused.param)) from None

    async def _run(
        self,
        websocket: WebSocket,
        tenant: Tenant,
        body: ResponsesRequest,
        event: dict[str, Any],
        kept: Kept,
        timing: Timing,
    ) -> int:
        """The response's events, sent as they come; its conversation kept once it ends."""
        prior = body.previous_response_id
        # None: read as over HTTP (a stored response's from Redis, a conversation's items,
        # the tenant's own: another's is a missing one).
        history = kept.of(prior) if prior else None
        record, route, events = await self._responses.opened(tenant, body, history)
        timing.ran(route)
        stream_id = event.get("stream_id")
        renderer = ResponseEvents(record, frame=lambda data, _kind: _message(data, stream_id))
        answer: dict[str, Any] | None = None
        try:
            for text in renderer.opening():
                await websocket.send_text(text)
            try:
                async for piece in events:
                    if "end" in piece:
                        answer = piece["end"]
                        timing.ran(route, answer)
                        timing.ended(time.perf_counter())
                        if not body.store:
                            # Forgotten before its end is told: nothing of it outlives the turn.
                            await self._responses.forget(route.key)
                    for text in renderer.render(piece):
                        await websocket.send_text(text)
            except GatewayError as exc:
                kept.evict(prior)
                if not body.store:
                    await self._responses.forget(route.key)
                await websocket.send_text(renderer.failed(refusal(exc)))
                return refusal(exc).status
        finally:
            self._runner.close_later(events)
        if answer is not None:
            kept.keep(record["id"], conversation_after(record, answer))
        return 200


def _prior(event: dict[str, Any]) -> str | None:
    prior = event.get("previous_response_id")
    return prior if isinstance(prior, str) else None


def _message(data: dict[str, Any], stream_id: Any) -> str:
    """One event as a WebSocket message (the lane it answers, when the client named one)."""
    if isinstance(stream_id, str):
        data = {**data, "stream_id": stream_id}
    return json.dumps(data, separators=(",", ":"))


def _error_event(refused: Refusal, code: str | None, stream_id: Any) -> str:
    """A failure as the WebSocket mode's ``error`` event."""
    error = {
        "type": refused.error_type or ERROR_TYPES.get(refused.status, "api_error"),
        "code": code or refused.error_code or CODES.get(refused.status, "server_error"),
        "message": refused.message,
        "param": refused.param,
    }
    return _message({"type": "error", "status": refused.status, "error": error}, stream_id)


def websocket_router(socket: ResponsesWebSocket) -> APIRouter:
    """The WebSocket upgrade of ``/v1/responses``."""
    router = APIRouter()

    @router.websocket(ENDPOINT)
    async def responses_websocket(websocket: WebSocket) -> None:
        await socket.serve(websocket)

    return router
