"""The models ``GET /v1/models`` lists (api/openai/models/serving.py): the registry's,
or with INNER_LLM_URL alone those its model server serves, asked once per window
through the queue; of them, those the project may use; on the real job parts over a
fake Redis and broker."""

from __future__ import annotations

import asyncio
import json

import pytest

from api.errors import ModelNotFound
from api.observability.server_timing import Timing
from api.openai.models.serving import ServedModels
from shared.model_access import ModelAccess
from shared.tenants import Tenant
from tests.unit.api.edge import config, running_parts

pytestmark = pytest.mark.unit


def test_a_registrys_models_are_its_names_and_aliases_and_nothing_is_queued() -> None:
    async def main() -> None:
        models = json.dumps({"models": [{"name": "small", "aliases": ["quick"], "url": "http://a:1"}]})
        async with running_parts(config(models=models)) as parts:
            served = ServedModels(parts.config, parts.routing, parts.runner)
            assert await served.served_models(Tenant("alpha"), Timing(0.0)) == ["small", "quick"]
            assert not parts.broker.sent

    asyncio.run(main())


def test_one_model_servers_models_are_asked_as_one_job_for_every_tenant() -> None:
    async def main() -> None:
        async with running_parts() as parts:
            parts.answer_every_job(lambda sent: {"models": ["qwen", "llama"]})
            served = ServedModels(parts.config, parts.routing, parts.runner)
            for tenant in ("alpha", "beta"):
                assert await served.served_models(Tenant(tenant), Timing(0.0)) == ["qwen", "llama"]
            # The gateway's own job, under no tenant: the second asking found its answer.
            assert [sent.name for sent in parts.broker.sent] == ["llm.models"]
            assert parts.broker.sent[0].task_id.startswith("models-") and "tenant" not in parts.broker.sent[0].job

    asyncio.run(main())


def test_a_project_is_listed_only_the_models_it_may_use_by_any_of_their_names() -> None:
    async def main() -> None:
        models = json.dumps({"models": [{"name": "small", "aliases": ["quick"], "url": "http://a:1"},
                                        {"name": "large", "url": "http://b:1"}]})  # fmt: skip
        async with running_parts(config(models=models)) as parts:
            served = ServedModels(parts.config, parts.routing, parts.runner)
            allowed = Tenant("proj_a", models=ModelAccess("allow_list", frozenset({"quick"})))
            assert await served.served_models(allowed, Timing(0.0)) == ["small", "quick"]
            denied = Tenant("proj_b", models=ModelAccess("deny_list", frozenset({"small"})))
            assert await served.served_models(denied, Timing(0.0)) == ["large"]
            nothing = Tenant("proj_c", models=ModelAccess("allow_list", frozenset()))
            assert await served.served_models(nothing, Timing(0.0)) == []

    asyncio.run(main())


def test_one_model_servers_models_are_filtered_by_the_names_a_project_may_ask_for() -> None:
    async def main() -> None:
        async with running_parts() as parts:
            parts.answer_every_job(lambda sent: {"models": ["qwen", "llama"]})
            served = ServedModels(parts.config, parts.routing, parts.runner)
            tenant = Tenant("proj_a", models=ModelAccess("deny_list", frozenset({"llama"})))
            assert await served.served_models(tenant, Timing(0.0)) == ["qwen"]
            assert served.served_model(tenant, "qwen") == "qwen"
            with pytest.raises(ModelNotFound, match="'llama'"):
                served.served_model(tenant, "llama")

    asyncio.run(main())
