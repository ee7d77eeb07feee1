"""The models ``GET /v1/models`` lists (api/openai/models/serving.py): the registry's,
or with INNER_LLM_URL alone those its model server serves, asked once per window
through the queue; on the real job parts over a fake Redis and broker."""

from __future__ import annotations

import asyncio
import json

import pytest

from api.observability.server_timing import Timing
from api.openai.models.serving import ServedModels
from shared.registry import load_registry
from shared.tenants import Tenant
from tests.unit.api.edge import config, running_parts

pytestmark = pytest.mark.unit


def test_a_registrys_models_are_its_names_and_aliases_and_nothing_is_queued() -> None:
    async def main() -> None:
        models = json.dumps({"models": [{"name": "small", "aliases": ["quick"], "url": "http://a:1"}]})
        async with running_parts(config(models=models)) as parts:
            served = ServedModels(parts.config, parts.routing, parts.runner)
            registry = load_registry(parts.config)
            assert await served.served_models(registry, Tenant("alpha"), Timing(0.0)) == ["small", "quick"]
            assert not parts.broker.sent

    asyncio.run(main())


def test_one_model_servers_models_are_asked_as_one_job_for_every_tenant() -> None:
    async def main() -> None:
        async with running_parts() as parts:
            parts.answer_every_job(lambda sent: {"models": ["qwen", "llama"]})
            served = ServedModels(parts.config, parts.routing, parts.runner)
            registry = load_registry(parts.config)
            for tenant in ("alpha", "beta"):
                assert await served.served_models(registry, Tenant(tenant), Timing(0.0)) == ["qwen", "llama"]
            # The gateway's own job, under no tenant: the second asking found its answer.
            assert [sent.name for sent in parts.broker.sent] == ["llm.models"]
            assert parts.broker.sent[0].task_id.startswith("models-") and "tenant" not in parts.broker.sent[0].job

    asyncio.run(main())
