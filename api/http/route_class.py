"""The route class of every gateway endpoint:

- the API key checked on the headers, before a byte of the body is read (an upload
  without a valid key is not read, nor spooled to disk);
- bodies over ``MAX_BODY_BYTES`` refused with 413 before they are read whole;
- a JSON body read strictly (api/http/json_body.py: no NaN, no lone surrogate,
  nesting within ``MAX_JSON_DEPTH``);
- every error answered from the one table of statuses (api/http/statuses.py);
- an answer given before the body was read whole (401, 413) is sent once the rest of
  the body is read and dropped (at most DRAIN_BYTES, DRAIN_SECONDS; STRANGER_DRAIN_BYTES
  for a caller the guard refused), so that a client that writes its whole body before
  reading (Python's urllib, requests) reads it instead of a reset connection; then the
  connection is closed (``Connection: close``): nothing more of that body is read;
- each request counted in the metrics by endpoint, status and cause, and logged on one
  access line with its job's id, model and queue.

A route whose errors have a format of their own (OpenAI's, on ``/v1``; Anthropic's, on
``/v1/messages``) overrides `GatewayRoute.answer_error`; its requests are counted with
the status it answers. One that takes its key in a header of its own (Anthropic's
``x-api-key``) overrides `GatewayRoute.presented_key`. The
request's tenant (and whose files and batches it sees) is put on ``request.state`` for
the routes' dependencies (api/deps.py).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, ClassVar

from fastapi import Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.errors import BodyTooLarge, GatewayError
from api.http.json_body import loads
from api.http.statuses import Refusal, refusal
from api.observability.metrics import Metrics
from api.observability.server_timing import Timing
from api.tenancy.guard import Guard
from shared.config import Config
from shared.telemetry.logs import current_job

access = logging.getLogger("api.access")

Receive = Callable[[], Awaitable[Any]]

# The most of a refused body read (and dropped) before its answer is sent, in bytes and
# seconds, and the longest silence waited for more; past any, the connection is closed
# after the answer.
DRAIN_BYTES = 64 * 1024 * 1024
# A caller refused on its key or its rate limit (no tenant's request) is owed less: a
# small request's body, no more.
STRANGER_DRAIN_BYTES = 1024 * 1024
DRAIN_SECONDS = 10.0
DRAIN_IDLE_SECONDS = 1.0

Refused = GatewayError | StarletteHTTPException | RequestValidationError


class Access(enum.Enum):
    """Who may call an endpoint."""

    TENANT = "tenant"  # a tenant's key (anyone, when no keys are configured)
    OPERATOR = "operator"  # an admin key, or METRICS_TOKEN
    ADMIN = "admin"  # an admin API key (/v1/organization/*: the control plane)
    TENANT_ADMIN = "tenant_admin"  # a tenant's admin key (admin: true): what acts, or shows what jobs held


@dataclass(frozen=True)
class Edge:
    """What every endpoint needs at the edge: the settings, the guard, the metrics."""

    config: Config
    guard: Guard
    metrics: Metrics


class GatewayRequest(Request):
    """A request whose JSON body is read strictly (api/http/json_body.py)."""

    max_depth = 64

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads(await self.body(), self.max_depth)
        return self._json


class GatewayRoute(APIRoute):
    """Guards, limits, counts and logs each request of the endpoint, and answers its
    errors (the one handler of api/http/statuses.py's table). A router takes the class
    made for its API's parts and its callers: ``route_class=GatewayRoute.at(edge)``."""

    edge: ClassVar[Edge]
    access: ClassVar[Access] = Access.TENANT

    @classmethod
    def at(cls, edge: Edge, access: Access = Access.TENANT) -> type[GatewayRoute]:
        """This route class for the API of `edge`, for callers of `access`."""
        return type(cls.__name__, (cls,), {"edge": edge, "access": access})

    def answer_error(self, request: Request, refused: Refusal, exc: Refused) -> Response:
        """The response for an error: FastAPI's own format (``{"detail": ...}``)."""
        if isinstance(exc, RequestValidationError):
            return JSONResponse({"detail": jsonable_encoder(exc.errors())}, status_code=422)
        return JSONResponse({"detail": refused.message}, status_code=refused.status, headers=refused.headers)

    def presented_key(self, request: Request) -> str:
        """The credentials the request presents, as an ``Authorization`` header's value."""
        return request.headers.get("authorization", "")

    def body_limit(self, config: Config) -> int:
        """The largest body the endpoint reads, in bytes."""
        return config.max_body_bytes

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        endpoint = self.path_format
        edge, allowed = self.edge, self.access
        config, metrics, guard = edge.config, edge.metrics, edge.guard
        limit = self.body_limit(config)
        answer_error = self.answer_error
        presented_key = self.presented_key

        async def route(request: Request) -> Response:
            started = time.perf_counter()
            # The endpoint records its job on it (TimingDep, api/deps.py).
            timing = request.state.timing = Timing(started, metrics=metrics)
            asker: dict[str, str] = {}
            status, why = 500, "InternalError"
            streamed = False
            body = _Body(request.receive, limit)
            drain = STRANGER_DRAIN_BYTES  # until the guard has let the caller in
            try:
                try:
                    # The key is checked before a byte of the body is read.
                    authorization = presented_key(request)
                    if allowed is Access.TENANT:
                        tenant = await guard.admit(authorization, request.client.host if request.client else "")
                        request.state.tenant = tenant
                        request.state.owner = guard.owner(tenant)
                        asker = {"tenant": tenant.name}  # the access line names it
                        current_job.set(asker)  # so does every line logged about the request
                    elif allowed is Access.OPERATOR:
                        await guard.operator(authorization)
                    elif allowed is Access.ADMIN:
                        request.state.admin = await guard.admin(authorization)
                        asker = {"admin_key": request.state.admin.key_id}  # the access line names it
                    elif allowed is Access.TENANT_ADMIN:
                        tenant = await guard.tenant_admin(authorization)
                        asker = {"tenant": tenant.name}
                        current_job.set(asker)
                    drain = DRAIN_BYTES
                    # The same request with a body that cannot grow past the limit: the
                    # handler reads it through this receive (Starlette's public constructor).
                    length = request.headers.get("content-length", "")
                    if length.isdigit() and int(length) > limit:
                        body.refuse()
                    reading = GatewayRequest(request.scope, body.receive)
                    reading.max_depth = config.max_json_depth
                    response = await handler(reading)
                except (GatewayError, StarletteHTTPException, RequestValidationError) as caught:
                    # FastAPI wraps what reading the body raised (an InvalidJson) in a 400 of its own.
                    exc = caught.__cause__ if isinstance(caught.__cause__, GatewayError) else caught
                    # A client waiting for "100 Continue" has sent nothing yet: answered at once.
                    waiting = not body.asked and "100-continue" in request.headers.get("expect", "").lower()
                    if not body.ended and not waiting:
                        await body.drain(drain)
                    refused = refusal(exc)
                    why = refused.cause
                    response = answer_error(request, refused, exc)
                    if not body.ended:
                        # The rest of the body is never read: the connection ends with the answer.
                        response.headers["Connection"] = "close"
                else:
                    why = f"http_{response.status_code}"
                status = response.status_code
                # What the gateway cost this answer (a stream's: counted as it ends).
                streamed = isinstance(response, StreamingResponse)
                response.headers["Server-Timing"] = timing.header(time.perf_counter(), streamed)
                if timing.served_model is not None:
                    response.headers["X-Served-Model"] = timing.served_model
                return response
            finally:
                seconds = time.perf_counter() - started
                if not streamed:
                    timing.observe(metrics, started + seconds)
                metrics.requests.labels(endpoint, request.method, str(status)).inc()
                metrics.request_seconds.labels(endpoint).observe(seconds)
                if status >= 400:
                    metrics.errors.labels(why).inc()
                # The access line, with the job's id, model and queue (its Timing's, when it ran one).
                access.info(
                    "%s %s %d", request.method, request.url.path, status,
                    extra={**asker, **(timing.job or {}), "status": status, "seconds": round(seconds, 4),
                           "client": _client(request)},
                )  # fmt: skip

        return route


def _message(limit: int) -> str:
    return f"request body larger than {limit} bytes (MAX_BODY_BYTES; BATCH_MAX_FILE_BYTES for files)"


def _client(request: Request) -> str | None:
    return f"{request.client.host}:{request.client.port}" if request.client else None


class _Body:
    """A request's body as the handler reads it: never past `limit` bytes (413), and
    whether it was read to its end."""

    def __init__(self, receive: Receive, limit: int) -> None:
        self._receive = receive
        self._limit = limit
        self._received = 0
        self._refused = False
        self.asked = False  # whether the body was asked for (a "100 Continue" then went out)
        self.ended = False

    def refuse(self) -> None:
        """Announced larger than the limit by its Content-Length: refused before a byte is read."""
        self._refused = True

    async def receive(self) -> Any:
        if self._refused:
            raise BodyTooLarge(_message(self._limit))
        self.asked = True
        event = await self._receive()
        if event.get("type") == "http.request":
            self._received += len(event.get("body", b""))
            self.ended = not event.get("more_body", False)
            if self._received > self._limit:
                raise BodyTooLarge(_message(self._limit))
        else:  # http.disconnect
            self.ended = True
        return event

    async def drain(self, most: int) -> None:
        """Read and drop the rest of the body (at most `most` bytes, for DRAIN_SECONDS), so
        that the answer reaches a client still sending it rather than a reset."""
        dropped = 0
        try:
            async with asyncio.timeout(DRAIN_SECONDS):
                while not self.ended and dropped < most:
                    async with asyncio.timeout(DRAIN_IDLE_SECONDS):
                        event = await self._receive()
                    dropped += len(event.get("body", b""))
                    self.ended = event.get("type") != "http.request" or not event.get("more_body", False)
        except TimeoutError:
            pass
