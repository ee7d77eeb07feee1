"""Anthropic's edge, shared by every Anthropic endpoint: errors in Anthropic's format
(``{"type": "error", "error": {"type", "message"}}``, with the statuses the ``anthropic``
SDKs map to their exception classes: 400 for any invalid request, 529 when the queue is
full), the key read from ``x-api-key`` as well as ``Authorization: Bearer``, and the
headers Anthropic's clients send (``anthropic-version`` accepted, ``anthropic-beta``
ignored)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import Header, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from api.errors import QueueFull, Unauthorized
from api.http.route_class import GatewayRoute, Refused
from api.http.statuses import ANTHROPIC_ERROR_TYPES, ANTHROPIC_OVERLOADED, ANTHROPIC_STATUSES, Refusal

AnthropicVersion = Annotated[
    str | None, Header(description="Anthropic's API version (2023-06-01): accepted, any value; not required")
]
AnthropicBeta = Annotated[str | None, Header(description="Anthropic's beta features: accepted and ignored")]

# Pydantic's names for the member of a union a value was tried as ("str",
# "list[dict[str, any]]"), which a field's path does not show.
_UNION_MEMBER = re.compile(r"^(str|int|float|bool|none|[a-z-]+\[.*\])$", re.IGNORECASE)


def anthropic_status(refused: Refusal, exc: Refused | None = None) -> int:
    """The status an error is answered with on Anthropic's endpoints."""
    if isinstance(exc, QueueFull):
        return ANTHROPIC_OVERLOADED
    return ANTHROPIC_STATUSES.get(refused.status, refused.status)


def anthropic_error(status: int, message: str) -> dict[str, Any]:
    """An error in Anthropic's format, its type the status's."""
    return {"type": "error", "error": {"type": ANTHROPIC_ERROR_TYPES.get(status, "api_error"), "message": message}}


def validation_message(exc: RequestValidationError) -> str:
    """What is wrong with a body, naming its field as the client wrote it
    (``messages.0.content``), without pydantic's names of union members."""
    errors = exc.errors()
    # The deepest error: a value tried as each member of a union fails first as a string.
    first = max(errors, key=lambda error: len(error.get("loc", ()))) if errors else {}
    loc = [str(part) for part in first.get("loc", ())[1:] if not _UNION_MEMBER.match(str(part))]
    return f"{'.'.join(loc) or 'body'}: {first.get('msg', 'invalid')}"


class AnthropicRoute(GatewayRoute):
    """A route whose every error is answered in Anthropic's format, and whose key may
    come in ``x-api-key``."""

    def presented_key(self, request: Request) -> str:
        key = request.headers.get("x-api-key", "").strip()
        authorization = request.headers.get("authorization", "")
        if not key:
            return authorization
        scheme, _, bearer = authorization.partition(" ")
        if scheme.lower() == "bearer" and bearer.strip() != key:
            # Two keys that disagree: neither is taken on trust (a proxy that checked
            # one must not let the other through).
            raise Unauthorized("x-api-key and Authorization: Bearer hold different keys: send one key")
        return f"Bearer {key}"

    def answer_error(self, request: Request, refused: Refusal, exc: Refused) -> Response:
        status = anthropic_status(refused, exc)
        message = validation_message(exc) if isinstance(exc, RequestValidationError) else refused.message
        if isinstance(exc, Unauthorized) and message.startswith("missing API key"):
            message = "missing API key: send the header 'x-api-key: <key>' (or 'Authorization: Bearer <key>')"
        return JSONResponse(anthropic_error(status, message), status_code=status, headers=refused.headers)


class AnthropicErrorDetail(BaseModel):
    type: str
    message: str


class AnthropicErrorBody(BaseModel):
    """An error, as Anthropic answers one."""

    type: str = "error"
    error: AnthropicErrorDetail
