"""The models resource: ``GET /models``, the models this gateway serves (to the request's
project: those it may use)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.routing import APIRoute

from api.deps import TenantDep
from api.jobs.route import JobRouting


def models_router(routing: JobRouting, route_class: type[APIRoute]) -> APIRouter:
    """The models of the registry, as each request's tenant sees it."""
    router = APIRouter(tags=["models"], route_class=route_class)

    @router.get("/models")
    async def list_models(tenant: TenantDep) -> dict[str, Any]:
        """The models this gateway serves (those the project may use): names, aliases,
        queue, and which is the default."""
        registry = routing.registry_for(tenant)
        listed = [
            {"name": m.name, "aliases": list(m.aliases), "queue": m.queue, "default": m is registry.default}
            for m in registry.models
        ]
        return {"models": listed, "any_name": registry.passthrough}

    return router
