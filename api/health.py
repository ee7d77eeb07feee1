"""Liveness (``/health``: the process answers) and readiness (``/ready``: every part
a job needs answers), for load balancers and Kubernetes probes. Neither needs a key."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import httpx
from fastapi import APIRouter
from fastapi.responses import JSONResponse

if TYPE_CHECKING:
    from registry import Model

    from api.jobs import JobRunner

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> dict[str, str]:
    """Always ``{"status": "ok"}`` while the process serves requests."""
    return {"status": "ok"}


READY_TIMEOUT = 2.0  # seconds each check of /ready may take


async def readiness(runner: JobRunner) -> tuple[bool, dict[str, dict[str, Any]]]:
    """Each part a job needs, checked at once: the broker, the result store, a worker
    for each model's queue, and each model server. Answers (all ready, each check)."""
    timeout = READY_TIMEOUT

    async def result_store() -> str:
        await runner.redis.ping()
        return "answers"

    async def broker() -> str:
        await asyncio.get_running_loop().run_in_executor(None, runner.check_broker)
        return "connected"

    async def model_server(model: Model) -> str:
        async with httpx.AsyncClient(timeout=timeout) as client:
            response = await client.get(f"{model.url}/v1/models", headers=_auth(model))
        if response.status_code >= 500:
            raise RuntimeError(f"answered {response.status_code}")
        return f"answered {response.status_code}"

    checks: dict[str, Any] = {"broker": broker(), "result_store": result_store()}
    for model in runner.registry.models:
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
    consumers = await asyncio.get_running_loop().run_in_executor(None, runner.workers_by_queue, timeout)
    for model in runner.registry.models:
        count = consumers.get(model.queue, 0)
        report[f"workers:{model.name}"] = {"ok": count > 0, "detail": f"{count} worker(s) on queue {model.queue}"}
    return all(check["ok"] for check in report.values()), report


def _auth(model: Model) -> dict[str, str]:
    return {"Authorization": f"Bearer {model.api_key.get_secret_value()}"} if model.api_key else {}


def ready_route(runner: JobRunner) -> Callable[[], Awaitable[JSONResponse]]:
    """``GET /ready``: 200 when every part is ready, else 503; each part named."""

    async def ready() -> JSONResponse:
        ok, checks = await readiness(runner)
        return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)

    return ready
