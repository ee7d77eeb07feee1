"""The models resource: ``GET /models``, the models this gateway serves."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.routing import APIRoute

from shared.registry import Registry


def models_router(registry: Registry, route_class: type[APIRoute]) -> APIRouter:
    """The models of `registry`."""
    router = APIRouter(tags=["models"], route_class=route_class)

    @router.get("/models")
    async def list_models() -> dict[str, Any]:
        """The models this gateway serves: names, aliases, queue, and which is the default."""
        listed = [
            {"name": m.name, "aliases": list(m.aliases), "queue": m.queue, "default": m is registry.default}
            for m in registry.models
        ]
        return {"models": listed, "any_name": registry.passthrough}

    return router
