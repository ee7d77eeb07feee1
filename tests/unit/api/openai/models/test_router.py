"""``GET /v1/models`` (api/openai/models/router.py): each model served, as OpenAI's model card."""

from __future__ import annotations

import asyncio
import json

import pytest
from fastapi.routing import APIRoute

from api.observability.server_timing import Timing
from api.openai.models.router import models_router
from api.openai.models.serving import ServedModels
from shared.registry import load_registry
from shared.tenants import Tenant
from tests.unit.api.edge import config, running_parts

pytestmark = pytest.mark.unit


def test_each_model_is_a_card_of_openais_list() -> None:
    async def main() -> None:
        models = json.dumps({"models": [{"name": "a", "url": "http://a:1"}, {"name": "b", "url": "http://b:1"}]})
        async with running_parts(config(models=models)) as parts:
            served = ServedModels(parts.config, parts.routing, parts.runner)
            (route,) = models_router(served, load_registry(parts.config), APIRoute).routes  # type: ignore[arg-type]
            listed = await route.endpoint(Tenant("default"), Timing(0.0))  # type: ignore[attr-defined]
            assert route.path == "/v1/models"  # type: ignore[attr-defined]
            assert listed.model_dump()["object"] == "list"
            assert [(card.id, card.object) for card in listed.data] == [("a", "model"), ("b", "model")]

    asyncio.run(main())
