"""``GET /v1/models`` and ``GET /v1/models/{model}`` (api/openai/models/router.py): each
model served, as OpenAI's model card; only those the request's project may use."""

from __future__ import annotations

import asyncio
import json

import pytest
from fastapi.routing import APIRoute

from api.errors import ModelNotFound
from api.observability.server_timing import Timing
from api.openai.models.router import models_router
from api.openai.models.serving import ServedModels
from shared.model_access import ModelAccess
from shared.tenants import Tenant
from tests.unit.api.edge import config, running_parts

pytestmark = pytest.mark.unit

MODELS = json.dumps({"models": [{"name": "a", "url": "http://a:1"}, {"name": "b", "url": "http://b:1"}]})


def test_each_model_is_a_card_of_openais_list_and_one_is_shown_by_its_name() -> None:
    async def main() -> None:
        async with running_parts(config(models=MODELS)) as parts:
            served = ServedModels(parts.config, parts.routing, parts.runner)
            listing, one = models_router(served, APIRoute).routes  # type: ignore[arg-type]
            listed = await listing.endpoint(Tenant("default"), Timing(0.0))  # type: ignore[attr-defined]
            assert listing.path == "/v1/models"  # type: ignore[attr-defined]
            assert listed.model_dump()["object"] == "list"
            assert [(card.id, card.object) for card in listed.data] == [("a", "model"), ("b", "model")]
            card = await one.endpoint("b", Tenant("default"))  # type: ignore[attr-defined]
            assert (card.id, card.object) == ("b", "model")

    asyncio.run(main())


def test_a_project_sees_only_the_models_it_may_use_and_another_is_not_found() -> None:
    async def main() -> None:
        async with running_parts(config(models=MODELS)) as parts:
            served = ServedModels(parts.config, parts.routing, parts.runner)
            listing, one = models_router(served, APIRoute).routes  # type: ignore[arg-type]
            tenant = Tenant("proj_a", models=ModelAccess("deny_list", frozenset({"a"})))
            listed = await listing.endpoint(tenant, Timing(0.0))  # type: ignore[attr-defined]
            assert [card.id for card in listed.data] == ["b"]
            with pytest.raises(ModelNotFound) as forbidden:
                await one.endpoint("a", tenant)  # type: ignore[attr-defined]
            with pytest.raises(ModelNotFound) as unknown:
                await one.endpoint("zz", tenant)  # type: ignore[attr-defined]
            assert forbidden.value.message.replace("'a'", "'zz'") == unknown.value.message

    asyncio.run(main())
