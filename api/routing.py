"""The route class of every gateway endpoint: bodies over ``MAX_BODY_BYTES`` refused
with 413 before they are read whole; each request counted in the metrics by endpoint,
status and cause, and logged on one access line with its job's id, model and queue.

A route whose errors have a format of their own (OpenAI's, on ``/v1``) overrides
`GatewayRoute.answer_error`; its requests are counted with the status it answers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from api import server_timing
from api.deps import services_of
from api.errors import ApiError, cause
from gateway.config import Config

access = logging.getLogger("api.access")

Receive = Callable[[], Awaitable[Any]]


class BodyTooLarge(ApiError):
    status_code = 413


class GatewayRoute(APIRoute):
    """Limits, counts and logs each request of the endpoint."""

    def answer_error(self, request: Request, exc: Exception) -> Response | None:
        """The response for an error the endpoint raised; None: FastAPI's own."""
        return None

    def body_limit(self, config: Config) -> int:
        """The largest body the endpoint reads, in bytes."""
        return config.max_body_bytes

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        endpoint = self.path_format
        answer_error = self.answer_error
        body_limit = self.body_limit

        async def route(request: Request) -> Response:
            parts = services_of(request)
            limit = body_limit(parts.config)
            timing = server_timing.start()
            started = timing.started
            status, why = 500, "InternalError"
            streamed = False
            try:
                try:
                    # The same request with a body that cannot grow past the limit: the
                    # handler reads it through this receive (Starlette's public constructor).
                    length = request.headers.get("content-length", "")
                    receive = _too_large(limit) if length.isdigit() and int(length) > limit else request.receive
                    response = await handler(Request(request.scope, _counting(receive, limit)))
                except (StarletteHTTPException, RequestValidationError) as exc:
                    why = "InvalidRequest" if isinstance(exc, RequestValidationError) else cause(exc)
                    status = exc.status_code if isinstance(exc, StarletteHTTPException) else 422
                    answered = answer_error(request, exc)
                    if answered is None:
                        raise
                    response = answered
                else:
                    why = f"http_{response.status_code}"
                status = response.status_code
                # What the gateway cost this answer (a stream's: counted as it ends).
                streamed = isinstance(response, StreamingResponse)
                response.headers["Server-Timing"] = timing.header(time.perf_counter(), streamed)
                return response
            finally:
                seconds = time.perf_counter() - started
                if not streamed:
                    timing.observe(parts.metrics, started + seconds)
                parts.metrics.requests.labels(endpoint, request.method, str(status)).inc()
                parts.metrics.request_seconds.labels(endpoint).observe(seconds)
                if status >= 400:
                    parts.metrics.errors.labels(why).inc()
                # The access line, with the job's id, model and queue (gateway.logs.current_job).
                access.info(
                    "%s %s %d", request.method, request.url.path, status,
                    extra={"status": status, "seconds": round(seconds, 4), "client": _client(request)},
                )  # fmt: skip

        return route


def _message(limit: int) -> str:
    return f"request body larger than {limit} bytes (MAX_BODY_BYTES; BATCH_MAX_FILE_BYTES for files)"


def _client(request: Request) -> str | None:
    return f"{request.client.host}:{request.client.port}" if request.client else None


def _too_large(limit: int) -> Receive:
    # Announced larger than the limit by its Content-Length: refused before a byte is read.
    async def refuse() -> Any:
        raise BodyTooLarge(_message(limit))

    return refuse


def _counting(receive: Receive, limit: int) -> Receive:
    received = 0

    async def counted() -> Any:
        nonlocal received
        event = await receive()
        if event.get("type") == "http.request":
            received += len(event.get("body", b""))
            if received > limit:
                raise BodyTooLarge(_message(limit))
        return event

    return counted
