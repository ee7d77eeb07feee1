"""The jobs resource: ``GET /jobs/{job_id}`` (where a job is, its result or error) and
``DELETE /jobs/{job_id}`` (cancel it).

A job_id names a job of the request's tenant: another tenant's job of the same id is
another job, and is answered as one that does not exist. An admin key reads and
cancels any tenant's with ``?tenant=``."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.routing import APIRoute

from api.deps import TenantDep, Whose, whose_key
from api.errors import GatewayError, JobConflict, JobNotFound
from api.jobs.store import JobStore
from api.jobs.webhook_events import WebhookEvents
from api.native.types import JOB_ID_PATTERN, JobStatus
from shared.contract import CancelOutcome
from shared.contract import JobStatus as ContractStatus
from shared.tenants import Tenant, Tenants

JobId = Annotated[str, Path(pattern=JOB_ID_PATTERN)]

log = logging.getLogger(__name__)


def _not_found(job_id: str) -> JobNotFound:
    return JobNotFound(f"no job {job_id!r}: never accepted, or its results have expired")


def _key(job_id: str, mine: Tenant, whose: str | None) -> str:
    return whose_key(job_id, mine, whose, _not_found(job_id))


def jobs_router(store: JobStore, events: WebhookEvents, tenants: Tenants, route_class: type[APIRoute]) -> APIRouter:
    """The jobs resource, over the job store; cancellations sent to `events`' webhooks.
    The server that answered a job (of a model with several) is shown to admin keys (and
    to anyone without keys): a tenant's key learns no address of the deployment's."""
    router = APIRouter(tags=["jobs"], route_class=route_class)

    def shown(status: dict[str, Any], job_id: str, mine: Tenant) -> JobStatus:
        result = status.get("result")
        if isinstance(result, dict) and "server" in result and tenants.keyed and not mine.admin:
            status = {**status, "result": {k: v for k, v in result.items() if k != "server"}}
        return JobStatus.model_validate({**status, "job_id": job_id})

    @router.get("/jobs/{job_id}", response_model=JobStatus, name="job_status", responses={404: {}})
    async def job_status(job_id: JobId, tenant: TenantDep, whose: Whose = None) -> JobStatus:
        """Status, timestamps, queue position, and the result or the error."""
        status = await store.status(_key(job_id, tenant, whose))
        if status is None:
            raise _not_found(job_id)
        return shown(status, job_id, tenant)

    @router.delete("/jobs/{job_id}", response_model=JobStatus, responses={404: {}, 409: {}})
    async def cancel_job(job_id: JobId, tenant: TenantDep, whose: Whose = None) -> JobStatus:
        """Cancel the job: a queued job never reaches the model server, a running one is
        stopped (its model-server connection closed). Requests waiting for it get 409; a job
        submitted without waiting has its ``job.cancelled`` event sent to webhooks."""
        key = _key(job_id, tenant, whose)
        outcome = await store.cancel(key)
        if outcome == CancelOutcome.CANCELLED and events.for_jobs and await store.notified(key):
            try:
                await events.emit("job.cancelled", key)
            except GatewayError as exc:  # the job is cancelled all the same
                log.warning("job %s cancelled, but its webhook event was not queued: %s", key, exc)
        status = await store.status(key)
        if outcome == CancelOutcome.UNKNOWN or status is None:
            raise _not_found(job_id)
        if status["status"] != ContractStatus.CANCELLED:
            raise JobConflict(f"job {job_id!r} has already finished: {status['status']}")
        return shown(status, job_id, tenant)

    return router
