"""OpenAI's edge, shared by every ``/v1`` feature: errors in OpenAI's format (``{"error":
{"message", "type", "param", "code"}}``, with the status codes the ``openai`` client maps
to its exception classes), the route class answering them, the headers its requests take."""

from dataclasses import replace
from typing import Annotated, Any

from fastapi import Header, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from api.http.route_class import GatewayRoute, Refused
from api.http.statuses import ERROR_TYPES, Refusal
from api.native.types import JOB_ID_PATTERN

IdempotencyKey = Annotated[
    str | None, Header(pattern=JOB_ID_PATTERN, description="plays the role of job_id: one job per key")
]
LastEventId = Annotated[
    str | None,
    Header(
        description="resuming a stream whose connection dropped: the id of the last event had; the same request"
        " (its Idempotency-Key) sent again gets the events after it"
    ),
]


def openai_error(refused: Refusal) -> dict[str, Any]:
    """An error in OpenAI's format."""
    kind = refused.error_type or ERROR_TYPES.get(refused.status, "api_error")
    code = refused.error_code or refused.status
    return {"error": {"message": refused.message, "type": kind, "param": refused.param, "code": code}}


class OpenAIRoute(GatewayRoute):
    """A route whose every error is answered in OpenAI's format; a body that does not
    validate is a 400, as OpenAI answers it (the ``openai`` SDK's BadRequestError)."""

    def answer_error(self, request: Request, refused: Refusal, exc: Refused) -> Response:
        status = 400 if isinstance(exc, RequestValidationError) else refused.status
        refused = replace(refused, status=status)
        return JSONResponse(openai_error(refused), status_code=status, headers=refused.headers)


# The whole answer as JSON, or with "stream": true, chunks as server-sent events.
OPENAI_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "text/event-stream": {},
        }
    }
}
