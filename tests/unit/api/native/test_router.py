"""The spec's endpoints (api/native/router.py): each path takes the deployment's bodies,
is guarded by the route class it is given, and hands its own task to the spec's work."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fastapi.routing import APIRoute

from api.http.route_class import Edge, GatewayRoute
from api.limits import request_models
from api.native.router import ERROR_RESPONSES, spec_router
from api.native.serving import SpecJobs
from api.observability.metrics import Metrics
from api.observability.server_timing import Timing
from api.tenancy.guard import Guard
from shared.tenants import Tenant
from tests.unit.api.edge import FakeRedis, config, running_parts

pytestmark = pytest.mark.unit


def routes(router: Any) -> dict[str, APIRoute]:
    return {route.path: route for route in router.routes}


def test_each_endpoint_takes_the_deployments_bodies_behind_the_route_class_it_is_given() -> None:
    settings = config(max_prompt_chars=10)
    metrics = Metrics()
    route_class = GatewayRoute.at(Edge(settings, Guard(settings, FakeRedis(), metrics), metrics))  # type: ignore[arg-type]
    models = request_models(settings)
    found = routes(spec_router(models, None, route_class))  # type: ignore[arg-type]
    assert set(found) == {"/generate", "/chat_completion"}
    for route in found.values():
        assert isinstance(route, route_class) and route.methods == {"POST"}
        assert set(ERROR_RESPONSES) <= set(route.responses)
    assert found["/generate"].body_field.field_info.annotation is models.generate  # type: ignore[union-attr]
    assert found["/chat_completion"].body_field.field_info.annotation is models.chat  # type: ignore[union-attr]


def test_generate_and_chat_completion_each_queue_their_own_task() -> None:
    async def main() -> None:
        async with running_parts() as parts:
            parts.answer_every_job(lambda sent: {"content": "ok"})
            models = request_models(parts.config)
            jobs = SpecJobs(parts.config, parts.routing, parts.runner)
            found = routes(spec_router(models, jobs, APIRoute))
            tenant, timing = Tenant("default"), Timing(0.0)
            generated = await found["/generate"].endpoint(
                body=models.generate(job_id="g", content="hi"), tenant=tenant, timing=timing
            )
            chatted = await found["/chat_completion"].endpoint(
                body=models.chat(job_id="c", messages=[{"role": "user", "content": "hi"}]), tenant=tenant,
                timing=timing,
            )  # fmt: skip
            assert (generated.job_id, chatted.job_id) == ("g", "c")
            assert [sent.name for sent in parts.broker.sent] == ["llm.generate", "llm.chat"]

    asyncio.run(main())
