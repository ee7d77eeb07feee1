"""The models resource: ``GET /models``, the models this gateway serves."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import RegistryDep

router = APIRouter(tags=["models"])


@router.get("/models")
async def list_models(registry: RegistryDep) -> dict[str, Any]:
    """The models this gateway serves: names, aliases, queue, and which is the default."""
    listed = [
        {"name": m.name, "aliases": list(m.aliases), "queue": m.queue, "default": m is registry.default}
        for m in registry.models
    ]
    return {"models": listed, "any_name": registry.passthrough}
