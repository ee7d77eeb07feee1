"""What operators and probes ask (api/observability/router.py): /health always, /ready
from the last round of checks (its parts named to operators only), /metrics and
/scaling behind the operators' route class."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from fastapi.routing import APIRoute

from api.http.route_class import Access, GatewayRoute
from api.observability import readiness as readiness_module
from api.observability.readiness import Readiness
from api.observability.router import operators_router, probes_router
from api.observability.scaling import Scaling
from api.observability.scrape import Scrape
from api.tenancy.guard import Guard
from shared.registry import load_registry
from tests.unit.api.edge import config, http_edge, running_parts

pytestmark = pytest.mark.unit


def test_ready_answers_everyone_whether_and_operators_which_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real, answering = httpx.AsyncClient, httpx.MockTransport(lambda request: httpx.Response(200))
    monkeypatch.setattr(readiness_module.httpx, "AsyncClient", lambda **o: real(transport=answering, **o))
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(
        "tenants:\n  - {name: alpha, keys: [alpha-key]}\n  - {name: ops, keys: [ops-key], admin: true}\n"
    )

    async def main() -> None:
        async with running_parts(config(api_keys_file=str(tenants))) as parts:
            checking = Readiness(parts.redis, parts.queue, load_registry(parts.config))  # type: ignore[arg-type]
            guard = Guard(parts.config, parts.redis, parts.metrics)  # type: ignore[arg-type]
            found = {route.path: route.endpoint for route in probes_router(checking, guard).routes}  # type: ignore[attr-defined]
            assert await found["/health"]() == {"status": "ok"}
            anonymous = await found["/ready"]("")
            assert anonymous.status_code == 503 and json.loads(anonymous.body) == {"ready": False}  # no worker
            operator = json.loads((await found["/ready"]("Bearer ops-key")).body)
            assert operator["checks"]["workers:default"]["ok"] is False and operator["checked_at"] > 0
            assert "checks" not in json.loads((await found["/ready"]("Bearer alpha-key")).body)
            await checking.close()
            parts.broker.consumers = {"w1": [{"name": parts.config.queue_name}]}  # a worker came
            ready = Readiness(parts.redis, parts.queue, load_registry(parts.config))  # type: ignore[arg-type]
            found = {route.path: route.endpoint for route in probes_router(ready, guard).routes}  # type: ignore[attr-defined]
            assert (await found["/ready"]("")).status_code == 200
            await ready.close()

    asyncio.run(main())


def test_the_operators_endpoints_are_behind_the_operators_route_class(monkeypatch: pytest.MonkeyPatch) -> None:
    real, answering = httpx.AsyncClient, httpx.MockTransport(lambda request: httpx.Response(200))
    monkeypatch.setattr(readiness_module.httpx, "AsyncClient", lambda **o: real(transport=answering, **o))

    async def main() -> None:
        async with running_parts() as parts:
            parts.broker.depths[parts.config.queue_name] = 2
            scaling = Scaling(parts.config, load_registry(parts.config), parts.queue, parts.fair, parts.redis)  # type: ignore[arg-type]
            checking = Readiness(parts.redis, parts.queue, load_registry(parts.config))  # type: ignore[arg-type]
            scrape = Scrape(parts.config, parts.metrics, parts.queue, lambda: [parts.config.queue_name], parts.redis,  # type: ignore[arg-type]
                            scaling, dict, checking)  # fmt: skip
            route_class = GatewayRoute.at(http_edge(parts.config), Access.OPERATOR)
            router = operators_router(scrape, scaling, route_class)
            assert all(isinstance(route, route_class) for route in router.routes)
            found = {route.path: route.endpoint for route in router.routes}  # type: ignore[attr-defined]
            signals = await found["/scaling"]()
            assert signals["object"] == "scaling" and signals["models"]["default"]["waiting"] == 2
            assert b"llm_api_jobs_waiting" in (await found["/metrics"]()).body
            await checking.close()

    asyncio.run(main())


def test_probes_are_open_to_anyone() -> None:
    router = probes_router(None, None)  # type: ignore[arg-type]
    assert {route.path for route in router.routes} == {"/health", "/ready"}
    assert all(type(route) is APIRoute for route in router.routes)
