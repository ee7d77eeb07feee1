"""Readiness (api/observability/readiness.py): every part a job needs checked, each named
with what is wrong and never where it lives; checked in the background, answered at once.
Redis and the broker are fakes (tests/unit/api/edge.py), the model servers answer through
httpx's MockTransport."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any
from unittest import mock

import httpx
import pytest

from api.observability import readiness as readiness_module
from api.observability.readiness import Readiness, readiness
from shared.registry import load_registry
from tests.unit.api.edge import config, running_parts

pytestmark = pytest.mark.unit

MODELS = json.dumps({"models": [
    {"name": "one", "url": "http://gpu-a:8000"},
    {"name": "pool", "servers": [{"url": "http://gpu-b:8000"}, {"url": "http://gpu-c:8000"}]},
]})  # fmt: skip


def servers(answer: Callable[[httpx.Request], httpx.Response]) -> Any:
    """The model servers, as httpx reaches them."""
    real = httpx.AsyncClient
    return mock.patch.object(readiness_module.httpx, "AsyncClient",
                             lambda **options: real(transport=httpx.MockTransport(answer), **options))  # fmt: skip


def test_every_part_answering_is_ready_and_each_is_named() -> None:
    async def main() -> None:
        async with running_parts(config(models=MODELS, queue_name="q")) as parts:
            parts.broker.consumers = {"w1": [{"name": "q.one"}, {"name": "q.pool"}]}
            registry = load_registry(parts.config)
            with servers(lambda request: httpx.Response(200, json={"data": []})):
                ready, checks = await readiness(parts.redis, parts.queue, registry)  # type: ignore[arg-type]
            assert ready, checks
            assert checks["broker"] == {"ok": True, "detail": "connected"}
            assert checks["model_server:pool"] == {"ok": True, "detail": "2 of 2 servers answer"}
            assert checks["workers:one"] == {"ok": True, "detail": "1 worker(s) on queue q.one"}

    asyncio.run(main())


def test_a_part_that_fails_is_named_without_its_address() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.host == "gpu-a":
            return httpx.Response(503)
        if request.url.host == "gpu-b":
            raise httpx.ConnectError("connection refused to gpu-b:8000")
        return httpx.Response(200)

    async def main() -> None:
        async with running_parts(config(models=MODELS, queue_name="q")) as parts:
            parts.redis.down = True
            registry = load_registry(parts.config)
            with servers(answer):
                ready, checks = await readiness(parts.redis, parts.queue, registry)  # type: ignore[arg-type]
            assert not ready
            assert checks["result_store"] == {"ok": False, "detail": "does not answer (ConnectionError)"}
            assert checks["model_server:one"] == {"ok": False, "detail": "answered 503"}
            assert checks["model_server:pool"] == {"ok": True, "detail": "1 of 2 servers answer"}
            assert checks["workers:pool"] == {"ok": False, "detail": "0 worker(s) on queue q.pool"}
            assert "gpu-" not in json.dumps(checks) and "6379" not in json.dumps(checks)

    asyncio.run(main())


def test_probes_are_answered_from_the_last_round_the_first_waiting_for_it() -> None:
    async def main() -> None:
        async with running_parts() as parts:
            parts.broker.consumers = {"w1": [{"name": parts.config.queue_name}]}
            checking = Readiness(parts.redis, parts.queue, load_registry(parts.config))  # type: ignore[arg-type]
            with servers(lambda request: httpx.Response(200)):
                first, second = await asyncio.gather(checking.last(), checking.last())
                assert first is second and first is not None and first.ready
                assert await checking.last() is first  # answered at once, from the last round
            await checking.close()

    asyncio.run(main())
