"""OpenAI's Responses API: ``POST /v1/responses``, ``GET /v1/responses/{id}`` (and
its stream, ``?stream=true&starting_after=N``), ``POST /v1/responses/{id}/cancel``,
``DELETE /v1/responses/{id}``, ``GET /v1/responses/{id}/input_items``,
``POST /v1/responses/input_tokens``; the work is
api/openai/responses/serving.py's. See docs/responses.md.
"""

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Query, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.deps import TenantDep, TimingDep, Whose, whose_key
from api.limits import RequestModels
from api.openai.http import OPENAI_ANSWERS, IdempotencyKey, OpenAIRoute
from api.openai.responses.serving import Responses, not_found
from api.openai.responses.types import RESPONSE_ID_PATTERN, InputTokenCount
from api.openai.types import ErrorBody
from shared.tenants import Tenant

ResponseId = Annotated[str, Path(pattern=RESPONSE_ID_PATTERN)]


def _key(response_id: str, tenant: Tenant, whose: str | None) -> str:
    return whose_key(response_id, tenant, whose, not_found(response_id))


def responses_router(models: RequestModels, responses: Responses, route_class: type[OpenAIRoute]) -> APIRouter:
    """The Responses API, with the request body of `models` (the deployment's limits)."""
    router = APIRouter(
        prefix="/v1/responses", route_class=route_class, tags=["responses"], responses={400: {"model": ErrorBody}}
    )

    @router.post("", response_model=None, responses=OPENAI_ANSWERS)
    async def create_response(
        body: models.responses,  # type: ignore[name-defined]
        tenant: TenantDep,
        timing: TimingDep,
        idempotency_key: IdempotencyKey = None,
    ) -> dict[str, Any] | Response:
        """A response: answered whole, streamed as typed events (``stream``), or queued and
        answered at once (``background``: poll it, stream it, cancel it)."""
        return await responses.create(tenant, body, idempotency_key, timing)

    @router.post(
        "/input_tokens",
        response_model=InputTokenCount,
        responses={
            404: {"description": "Unknown model, or previous_response_id names no response of the key's tenant"},
            501: {"description": "The model's server counts no tokens (it serves no /tokenize)"},
            502: {"description": "The model's server is unreachable or failing"},
        },
    )
    async def count_input_tokens(body: models.input_tokens, tenant: TenantDep) -> dict[str, Any]:  # type: ignore[name-defined]
        """The tokens a response's input would be to its model (instructions, tools and the
        conversation it continues included), counted by the model's server."""
        return await responses.count_input_tokens(tenant, body)

    @router.api_route("/input_tokens", methods=["GET", "DELETE"], include_in_schema=False)
    async def input_tokens_is_posted() -> None:
        """405 (POST only): else GET and DELETE /{response_id} would take this path, and
        answer 400 for an id that is none."""
        raise StarletteHTTPException(405, "Method Not Allowed", headers={"Allow": "POST"})

    @router.get("/{response_id}", response_model=None, responses={**OPENAI_ANSWERS, 404: {}})
    async def retrieve_response(
        response_id: ResponseId,
        tenant: TenantDep,
        timing: TimingDep,
        stream: bool = False,
        starting_after: Annotated[int | None, Query(ge=-1)] = None,
        last_event_id: Annotated[str | None, Header()] = None,
        whose: Whose = None,
    ) -> dict[str, Any] | Response:
        """The response as it is now; with ``stream=true``, its events (those after
        ``starting_after``, or ``Last-Event-ID``), while it runs and after."""
        if starting_after is None and last_event_id is not None and last_event_id.strip().isdigit():
            starting_after = int(last_event_id)
        return await responses.retrieve(_key(response_id, tenant, whose), response_id, stream, starting_after, timing)

    @router.post("/{response_id}/cancel", response_model=None, responses={404: {}})
    async def cancel_response(response_id: ResponseId, tenant: TenantDep, whose: Whose = None) -> dict[str, Any]:
        """Cancel a queued or running response: it never reaches, or stops, the model server."""
        return await responses.cancel(_key(response_id, tenant, whose), response_id)

    @router.delete("/{response_id}", response_model=None, responses={404: {}})
    async def delete_response(response_id: ResponseId, tenant: TenantDep, whose: Whose = None) -> dict[str, Any]:
        """Delete the response (cancelled first if it runs): its record, result and stream."""
        return await responses.delete(_key(response_id, tenant, whose), response_id)

    @router.get("/{response_id}/input_items", response_model=None, responses={404: {}})
    async def list_input_items(
        response_id: ResponseId,
        tenant: TenantDep,
        order: Literal["asc", "desc"] = "desc",
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        after: Annotated[str | None, Query(max_length=256)] = None,
        whose: Whose = None,
    ) -> dict[str, Any]:
        """The response's own input items, newest first (``order=asc``: oldest first)."""
        return await responses.input_items(_key(response_id, tenant, whose), response_id, order, limit, after)

    return router
