"""``POST /v1/chat/completions`` (api/openai/chat/router.py): the deployment's body, the
token counts bounded, the Idempotency-Key as the job's id."""

from __future__ import annotations

import asyncio

import pytest
from fastapi.routing import APIRoute

from api.errors import LimitExceeded
from api.limits import request_models
from api.observability.server_timing import Timing
from api.openai.chat.router import chat_router
from api.openai.chat.serving import OpenAIJobs
from api.openai.http import OpenAIRoute
from shared.tenants import Tenant
from tests.unit.api.edge import config, http_edge, running_parts

pytestmark = pytest.mark.unit


def test_the_endpoint_takes_the_deployments_body_behind_openais_route_class() -> None:
    settings = config()
    models = request_models(settings)
    (route,) = chat_router(models, None, settings, OpenAIRoute.at(http_edge(settings))).routes  # type: ignore[arg-type]
    assert route.path == "/v1/chat/completions" and route.methods == {"POST"}  # type: ignore[attr-defined]
    assert issubclass(type(route), OpenAIRoute)
    assert route.body_field.field_info.annotation is models.openai_chat  # type: ignore[attr-defined]


def test_a_chat_runs_under_its_idempotency_key_and_max_tokens_beside_the_limit_it_uses_is_bounded() -> None:
    async def main() -> None:
        async with running_parts(config(max_tokens_limit=50)) as parts:
            parts.answer_every_job(lambda sent: {"content": "ok", "finish_reason": "stop"})
            models = request_models(parts.config)
            jobs = OpenAIJobs(parts.config, parts.routing, parts.runner)
            (route,) = chat_router(models, jobs, parts.config, APIRoute).routes  # type: ignore[arg-type]
            body = models.openai_chat(messages=[{"role": "user", "content": "hi"}])
            answer = await route.endpoint(body, Tenant("default"), Timing(0.0), idempotency_key="key-1")  # type: ignore[attr-defined]
            assert answer["id"] == "chatcmpl-key-1" and parts.broker.sent[0].task_id == "key-1"
            over = models.openai_chat(messages=[{"role": "user", "content": "x"}], max_completion_tokens=5,
                                      max_tokens=51)  # fmt: skip
            with pytest.raises(LimitExceeded, match="max_tokens: 51"):
                await route.endpoint(over, Tenant("default"), Timing(0.0))  # type: ignore[attr-defined]
            assert len(parts.broker.sent) == 1

    asyncio.run(main())
