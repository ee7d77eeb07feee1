"""``GET /models`` (api/native/models_router.py): the registry's models, which is the
default, and whether any other name is taken."""

from __future__ import annotations

import asyncio
import json

import pytest
from fastapi.routing import APIRoute

from api.jobs.route import JobRouting
from api.native.models_router import models_router
from shared.model_access import ModelAccess
from shared.registry import load_registry
from shared.tenants import Tenant
from tests.unit.api.edge import config

pytestmark = pytest.mark.unit


DEFAULT = Tenant("default")


def listed(tenant: Tenant = DEFAULT, **settings: str) -> dict[str, object]:
    settled = config(queue_name="q", **settings)
    router = models_router(JobRouting(settled, load_registry(settled)), APIRoute)
    (route,) = router.routes
    return asyncio.run(route.endpoint(tenant))  # type: ignore[attr-defined]


MODELS = json.dumps({"models": [{"name": "small", "aliases": ["quick"], "url": "http://a:1"},
                                {"name": "large", "url": "http://b:1", "queue": "big"}],
                     "default": "large"})  # fmt: skip


def test_the_registrys_models_are_listed_with_their_aliases_queues_and_the_default() -> None:
    assert listed(models=MODELS) == {
        "models": [
            {"name": "small", "aliases": ["quick"], "queue": "q.small", "default": False},
            {"name": "large", "aliases": [], "queue": "big", "default": True},
        ],
        "any_name": False,
    }


def test_one_model_server_without_a_registry_takes_any_name() -> None:
    assert listed()["any_name"] is True


def test_a_project_is_listed_only_the_models_it_may_use() -> None:
    tenant = Tenant("proj_a", models=ModelAccess("allow_list", frozenset({"quick"})))
    assert listed(tenant, models=MODELS)["models"] == [
        {"name": "small", "aliases": ["quick"], "queue": "q.small", "default": False}
    ]
