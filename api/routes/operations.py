"""What operators and probes ask: ``/health`` (the process answers), ``/ready`` (every
part a job needs answers) and ``/metrics`` (Prometheus). ``/health`` and ``/ready``
need no key: their router is outside the guarded one."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from fastapi import APIRouter, HTTPException, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST
from redis.exceptions import RedisError

from api.deps import MetricsDep, QueueDep, RegistryDep, ServicesDep
from api.observability.readiness import readiness

log = logging.getLogger(__name__)
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
async def metrics(parts: ServicesDep, metrics: MetricsDep, queue: QueueDep, registry: RegistryDep) -> Response:
    """Prometheus metrics of this API process, the jobs waiting in each queue, the
    webhook deliveries (all workers'), the lines of the batches this process drives."""
    queues = [*registry.queues, *parts.fair.tenant_queues]
    waiting = await asyncio.get_running_loop().run_in_executor(None, queue.depths, queues)
    webhooks: dict[tuple[str, str], int] = {}
    try:
        for field, count in (await parts.redis.hgetall(parts.config.keys.webhook_counts)).items():
            endpoint, _, outcome = field.decode().rpartition("|")
            webhooks[(endpoint, outcome)] = int(count)
    except (RedisError, OSError, ValueError) as exc:
        log.warning("could not read the webhook counts: %s", exc)
    # By model and state, not by batch: a batch id is no label (one series per batch ever run).
    batches: dict[tuple[str, str], int] = {}
    for progress in list(parts.keeper.progress.values()):
        for state in ("waiting", "running", "completed", "failed"):
            batches[(progress.model, state)] = batches.get((progress.model, state), 0) + getattr(progress, state)
    try:
        scaling = {model: signals.as_dict() for model, signals in (await parts.scaling.read(waiting)).items()}
    except HTTPException as exc:  # a part is down: the gauges are left out, the rest is scraped
        log.warning("could not read the scaling signals: %s", exc.detail)
        scaling = {}
    return Response(metrics.render(waiting, webhooks, batches, scaling), media_type=CONTENT_TYPE_LATEST)


@router.get("/scaling", responses={503: {"description": "The broker or the result store is unavailable; named"}})
async def scaling(parts: ServicesDep) -> dict[str, Any]:
    """Per model, the signals to scale its workers on (api/observability/scaling.py): jobs waiting, the
    oldest one's age, jobs running, worker slots and busy slots, and the demand."""
    signals = await parts.scaling.read()
    return {"object": "scaling", "at": round(time.time(), 3),
            "models": {model: each.as_dict() for model, each in signals.items()}}  # fmt: skip
