"""``GET /models`` (api/native/models_router.py): the registry's models, which is the
default, and whether any other name is taken."""

from __future__ import annotations

import asyncio
import json

import pytest
from fastapi.routing import APIRoute

from api.native.models_router import models_router
from shared.registry import load_registry
from tests.unit.api.edge import config

pytestmark = pytest.mark.unit


def listed(**settings: str) -> dict[str, object]:
    router = models_router(load_registry(config(queue_name="q", **settings)), APIRoute)
    (route,) = router.routes
    return asyncio.run(route.endpoint())  # type: ignore[attr-defined]


def test_the_registrys_models_are_listed_with_their_aliases_queues_and_the_default() -> None:
    models = json.dumps({"models": [{"name": "small", "aliases": ["quick"], "url": "http://a:1"},
                                    {"name": "large", "url": "http://b:1", "queue": "big"}],
                         "default": "large"})  # fmt: skip
    assert listed(models=models) == {
        "models": [
            {"name": "small", "aliases": ["quick"], "queue": "q.small", "default": False},
            {"name": "large", "aliases": [], "queue": "big", "default": True},
        ],
        "any_name": False,
    }


def test_one_model_server_without_a_registry_takes_any_name() -> None:
    assert listed()["any_name"] is True
