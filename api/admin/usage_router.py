"""The Administration API's usage and costs, as the ``openai`` SDK's admin client calls
them: ``client.admin.organization.usage.completions(...)``, ``.usage.embeddings(...)``
and ``.usage.costs(...)``. Admin API keys only (api/tenancy/guard.py); a query the
report does not take is a 400 naming the parameter (api/admin/usage.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from api.admin.usage import UsageReports
from api.openai.http import OpenAIRoute
from api.openai.types import ErrorBody


def usage_reports_router(reports: UsageReports, route_class: type[OpenAIRoute]) -> APIRouter:
    """The usage and costs reports over `reports`; `route_class` admits admin API keys only."""
    router = APIRouter(
        prefix="/v1/organization",
        route_class=route_class,
        tags=["organization"],
        responses={400: {"model": ErrorBody}, 401: {"model": ErrorBody}, 403: {"model": ErrorBody}},
    )

    @router.get("/usage/completions")
    async def usage_completions(request: Request) -> dict[str, Any]:
        """Completions' requests and tokens per bucket of time (1m, 1h, 1d), grouped by
        project_id, model, api_key_id, batch, as asked; figures as the model servers reported them."""
        return await reports.report("completions", request.query_params)

    @router.get("/usage/embeddings")
    async def usage_embeddings(request: Request) -> dict[str, Any]:
        """Embeddings' requests and input tokens per bucket of time, grouped as asked."""
        return await reports.report("embeddings", request.query_params)

    @router.get("/costs")
    async def costs(request: Request) -> dict[str, Any]:
        """What the tokens cost at the registry's prices, in USD per day, grouped by
        project_id, line_item, api_key_id as asked."""
        return await reports.report("costs", request.query_params)

    return router
