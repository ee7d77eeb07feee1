"""Readiness: whether every part a job needs answers now (the broker, the result store,
a worker on each model's queue, each model server), each part checked at once."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import redis.asyncio as aioredis
from pydantic import SecretStr

from api.jobs.queue import JobQueue
from shared.registry import Model, Registry, Server

READY_TIMEOUT = 2.0  # seconds each check may take


async def readiness(
    redis: aioredis.Redis, queue: JobQueue, registry: Registry
) -> tuple[bool, dict[str, dict[str, Any]]]:
    """Answers (all ready, each check with its detail)."""
    timeout = READY_TIMEOUT
    loop = asyncio.get_running_loop()

    async def result_store() -> str:
        await redis.ping()
        return "answers"

    async def broker() -> str:
        await loop.run_in_executor(None, queue.check)
        return "connected"

    async def server(client: httpx.AsyncClient, server: Server) -> str:
        response = await client.get(f"{server.url}/v1/models", headers=_auth(server.api_key))
        if response.status_code >= 500:
            raise RuntimeError(f"answered {response.status_code}")
        return f"answered {response.status_code}"

    async def model_server(model: Model) -> str:
        async with httpx.AsyncClient(timeout=timeout) as client:
            if len(model.servers) == 1:
                return await server(client, model.servers[0])
            # Several servers: ready while one answers. /ready is open to anyone: the count
            # only; which servers, and why, are at /scaling (operators').
            answers = await asyncio.gather(*(server(client, each) for each in model.servers), return_exceptions=True)
        up = sum(not isinstance(answer, BaseException) for answer in answers)
        if not up:
            raise RuntimeError(f"no server of model {model.name} answers (of {len(answers)}; each at /scaling)")
        return f"{up} of {len(answers)} servers answer"

    checks: dict[str, Any] = {"broker": broker(), "result_store": result_store()}
    for model in registry.models:
        checks[f"model_server:{model.name}"] = model_server(model)
    names = list(checks)
    outcomes = await asyncio.gather(
        *(asyncio.wait_for(c, timeout + 1) for c in checks.values()), return_exceptions=True
    )
    report: dict[str, dict[str, Any]] = {}
    for name, outcome in zip(names, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            report[name] = {"ok": False, "detail": f"{type(outcome).__name__}: {outcome}"[:300]}
        else:
            report[name] = {"ok": True, "detail": outcome}
    consumers = await loop.run_in_executor(None, queue.consumers, timeout)
    for model in registry.models:
        count = consumers.get(model.queue, 0)
        report[f"workers:{model.name}"] = {"ok": count > 0, "detail": f"{count} worker(s) on queue {model.queue}"}
    return all(check["ok"] for check in report.values()), report


def _auth(key: SecretStr | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key.get_secret_value()}"} if key else {}
