"""What operators and probes ask: ``/health`` (the process answers), ``/ready`` (every
part a job needs answers), and the operators' ``/metrics`` (Prometheus) and
``/scaling`` (signals to scale workers on). The probes need no key; the operators'
endpoints answer admin keys and METRICS_TOKEN."""

from __future__ import annotations

import time
from typing import Any

import redis.asyncio as aioredis
from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST

from api.jobs.queue import JobQueue
from api.observability.readiness import readiness
from api.observability.scaling import Scaling
from api.observability.scrape import Scrape
from shared.registry import Registry


def probes_router(redis: aioredis.Redis, queue: JobQueue, registry: Registry) -> APIRouter:
    """``/health`` and ``/ready``, open to anyone, neither counted nor logged (a
    Kubernetes probe asks every few seconds)."""
    router = APIRouter(tags=["health"])

    @router.get("/health")
    async def health() -> dict[str, str]:
        """Always ``{"status": "ok"}`` while the process serves requests."""
        return {"status": "ok"}

    @router.get("/ready", responses={503: {"description": "A part is not ready; each is named"}})
    async def ready() -> JSONResponse:
        """200 when every part is ready, else 503; each part named."""
        ok, checks = await readiness(redis, queue, registry)
        return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)

    return router


def operators_router(scrape: Scrape, scaling: Scaling, route_class: type[APIRoute]) -> APIRouter:
    """``/metrics`` and ``/scaling``: every tenant's figures, for operators."""
    router = APIRouter(tags=["operations"], route_class=route_class)

    @router.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> Response:
        """Prometheus metrics of this API process, the jobs waiting in each queue, the
        webhook deliveries (all workers'), the lines of the batches this process drives."""
        return Response(await scrape.render(), media_type=CONTENT_TYPE_LATEST)

    @router.get("/scaling", responses={503: {"description": "The broker or the result store is unavailable; named"}})
    async def scaling_signals() -> dict[str, Any]:
        """Per model, the signals to scale its workers on (api/observability/scaling.py):
        jobs waiting, the oldest one's age, jobs running, worker slots and busy slots,
        and the demand."""
        signals = await scaling.read()
        return {"object": "scaling", "at": round(time.time(), 3),
                "models": {model: each.as_dict() for model, each in signals.items()}}  # fmt: skip

    return router
