"""What operators and probes ask: ``/health`` (the process answers), ``/ready`` (every
part a job needs answers) and ``/metrics`` (Prometheus). ``/health`` and ``/ready``
need no key: their router is outside the guarded one."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST

from api.deps import MetricsDep, QueueDep, RegistryDep, ServicesDep
from api.readiness import readiness

probes = APIRouter(tags=["health"])
router = APIRouter(tags=["operations"])


@probes.get("/health")
async def health() -> dict[str, str]:
    """Always ``{"status": "ok"}`` while the process serves requests."""
    return {"status": "ok"}


@probes.get("/ready", responses={503: {"description": "A part is not ready; each is named"}})
async def ready(parts: ServicesDep) -> JSONResponse:
    """200 when every part is ready, else 503; each part named."""
    ok, checks = await readiness(parts.redis, parts.queue, parts.registry)
    return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(metrics: MetricsDep, queue: QueueDep, registry: RegistryDep) -> Response:
    """Prometheus metrics of this API process, and the jobs waiting in each queue."""
    waiting = await asyncio.get_running_loop().run_in_executor(None, queue.depths, registry.queues)
    return Response(metrics.render(waiting), media_type=CONTENT_TYPE_LATEST)
