"""What operators and probes ask: ``/health`` (the process answers: liveness), ``/ready``
(every part a job needs answers: readiness), and the operators' ``/metrics``
(Prometheus) and ``/scaling`` (signals to scale workers on). The probes need no key, and
tell a caller without an operator's key only whether the API is ready; the operators'
endpoints, and the parts' names and details at ``/ready``, answer admin keys and
METRICS_TOKEN."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Header, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST

from api.errors import GatewayError
from api.observability.readiness import Readiness
from api.observability.scaling import Scaling
from api.observability.scrape import Scrape
from api.tenancy.guard import Guard


def probes_router(readiness: Readiness, guard: Guard) -> APIRouter:
    """``/health`` and ``/ready``, open to anyone, neither counted nor logged (a
    Kubernetes probe asks every few seconds)."""
    router = APIRouter(tags=["health"])

    @router.get("/health")
    async def health() -> dict[str, str]:
        """Always ``{"status": "ok"}`` while the process serves requests."""
        return {"status": "ok"}

    @router.get("/ready", responses={503: {"description": "A part is not ready (named to operators)"}})
    async def ready(authorization: Annotated[str, Header()] = "") -> JSONResponse:
        """200 when every part was ready at the last check, else 503 (answered at once,
        from checks made in the background). An admin key or METRICS_TOKEN also gets each
        part, named, with its detail and when it was checked."""
        report = await readiness.last()
        ok = report is not None and report.ready
        answer: dict[str, Any] = {"ready": ok}
        if await _operator(guard, authorization):
            answer["checks"] = report.checks if report is not None else {}
            answer["checked_at"] = round(report.at, 3) if report is not None else None
        return JSONResponse(answer, status_code=200 if ok else 503)

    return router


async def _operator(guard: Guard, authorization: str) -> bool:
    """Whether the caller may read operators' details (an admin key, METRICS_TOKEN)."""
    try:
        await guard.operator(authorization)
    except GatewayError:
        return False
    return True


def operators_router(scrape: Scrape, scaling: Scaling, route_class: type[APIRoute]) -> APIRouter:
    """``/metrics`` and ``/scaling``: every tenant's figures, for operators."""
    router = APIRouter(tags=["operations"], route_class=route_class)

    @router.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> Response:
        """Prometheus metrics of this API process, the jobs waiting in each queue, the
        webhook deliveries (all workers'), the lines of the batches this process drives."""
        return Response(await scrape.render(), media_type=CONTENT_TYPE_LATEST)

    @router.get("/scaling", responses={503: {"description": "The broker or the result store is unavailable; named"}})
    async def scaling_signals(bands: bool = False) -> dict[str, Any]:
        """Per model, the signals to scale its workers on (api/observability/scaling.py):
        jobs waiting, the oldest one's age, jobs running, worker slots and busy slots,
        and the demand; with ``?bands=true``, its waiting jobs by priority band too."""
        signals = await scaling.read(bands=bands)
        return {"object": "scaling", "at": round(time.time(), 3),
                "models": {model: each.as_dict() for model, each in signals.items()}}  # fmt: skip

    return router
