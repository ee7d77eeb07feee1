"""``POST /v1/embeddings`` (api/openai/embeddings/router.py): the deployment's body, run
under its Idempotency-Key."""

from __future__ import annotations

import asyncio
import json

import pytest
from fastapi.routing import APIRoute

from api.limits import request_models
from api.observability.server_timing import Timing
from api.openai.embeddings.router import embeddings_router
from api.openai.embeddings.serving import Embeddings
from shared.contract.embeddings import pack_vector
from shared.tenants import Tenant
from tests.unit.api.edge import running_parts

pytestmark = pytest.mark.unit


def test_embeddings_run_under_the_idempotency_key_with_the_deployments_body() -> None:
    async def main() -> None:
        async with running_parts() as parts:
            parts.answer_every_job(lambda sent: {"embeddings": [pack_vector([0.25])]})
            models = request_models(parts.config)
            embedder = Embeddings(parts.config, parts.routing, parts.runner)
            (route,) = embeddings_router(models, embedder, APIRoute).routes  # type: ignore[arg-type]
            assert route.path == "/v1/embeddings"  # type: ignore[attr-defined]
            assert route.body_field.field_info.annotation is models.embeddings  # type: ignore[attr-defined]
            answer = await route.endpoint(models.embeddings(input="x"), Tenant("default"), Timing(0.0), "emb-1")  # type: ignore[attr-defined]
            said = json.loads(answer.body)  # rendered as it is (no copy by FastAPI's encoder)
            assert said["data"][0]["embedding"] == [0.25] and parts.broker.sent[0].task_id == "emb-1"

    asyncio.run(main())
