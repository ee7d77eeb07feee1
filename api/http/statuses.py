"""The one table of HTTP statuses: each failure of api/errors.py, and each error FastAPI
or Starlette raise themselves (validation, routing), as the status, message and
headers a client is answered with. The route class (api/http/route_class.py) answers
with it; so do streams that fail midway (api/http/sse.py) and a batch's error file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.errors import (
    BadRequest,
    BodyTooLarge,
    Conflict,
    Forbidden,
    GatewayError,
    InvalidInput,
    JobFailed,
    JobTimedOut,
    ModelServerUnanswered,
    NotFound,
    NotServedByModelServer,
    SpendLimitReached,
    TooManyRequests,
    Unauthorized,
    Unavailable,
    cause,
)

# By family: a class not listed takes its nearest listed base's status.
STATUSES: dict[type[GatewayError], int] = {
    BadRequest: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    BodyTooLarge: 413,
    InvalidInput: 422,
    TooManyRequests: 429,
    SpendLimitReached: 429,
    NotServedByModelServer: 501,
    ModelServerUnanswered: 502,
    Unavailable: 503,
    JobTimedOut: 504,
}


# A status's error ``type`` in OpenAI's format (``{"error": {"type", ...}}``, on ``/v1``
# and in a batch's error file); a status not listed is an "api_error".
ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    502: "model_server_error",
    503: "service_unavailable_error",
    504: "timeout_error",
}


# Anthropic's format (``{"type": "error", "error": {"type", "message"}}``, on
# ``/v1/messages``): the status each of the gateway's is answered with there (a body that
# does not validate is Anthropic's 400; a full queue, QueueFull, its 529 "overloaded"),
# and each status's error ``type``; a status not listed is an "api_error".
ANTHROPIC_STATUSES: dict[int, int] = {422: 400}
ANTHROPIC_OVERLOADED = 529
ANTHROPIC_ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def status_of(exc: GatewayError) -> int:
    """The status `exc` is answered with (a failed job's: the contract's for its failure)."""
    if isinstance(exc, JobFailed):
        return exc.status
    for kind in type(exc).__mro__:
        status = STATUSES.get(kind)
        if status is not None:
            return status
    return 500


@dataclass(frozen=True)
class Refusal:
    """An error as the client is answered: status, message, headers; what metrics call it
    (`cause`), and the field at fault when known (`param`)."""

    status: int
    message: str
    cause: str
    headers: dict[str, str] = field(default_factory=dict)
    param: str | None = None
    error_type: str | None = None  # OpenAI's `type`, when not the status's
    error_code: str | None = None  # OpenAI's `code`, when not the status


def refusal(exc: GatewayError | StarletteHTTPException | RequestValidationError) -> Refusal:
    """How `exc` is answered."""
    if isinstance(exc, RequestValidationError):
        first = _telling(exc.errors())
        param = ".".join(str(part) for part in first.get("loc", ())[1:]) or None
        return Refusal(422, f"{param or 'body'}: {first.get('msg')}", "InvalidRequest", param=param)
    if isinstance(exc, StarletteHTTPException):
        return Refusal(exc.status_code, str(exc.detail), cause(exc), dict(exc.headers or {}))
    headers = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    if exc.location is not None:
        headers["Location"] = exc.location
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    if exc.should_retry is not None:
        headers["x-should-retry"] = "true" if exc.should_retry else "false"
    return Refusal(
        status_of(exc), exc.message, cause(exc), headers, error_type=exc.error_type, error_code=exc.error_code
    )


def _telling(errors: Any) -> dict[str, Any]:
    """The error to report of a body's: the first, unless it is one branch of a union (a
    string where items were given) and another error reaches deeper into what was sent."""
    errors = list(errors or [])
    if not errors:
        return {}
    first = errors[0]
    if first.get("type") == "string_type" and len(errors) > 1:
        return max(errors[1:], key=lambda error: len(error.get("loc", ())))
    return first
