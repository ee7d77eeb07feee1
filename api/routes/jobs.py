"""The jobs resource: ``GET /jobs/{job_id}`` (where a job is, its result or error) and
``DELETE /jobs/{job_id}`` (cancel it)."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path

from api.deps import EventsDep, StoreDep
from api.errors import JobConflict, JobNotFound
from api.schemas import JOB_ID_PATTERN, JobStatus

JobId = Annotated[str, Path(pattern=JOB_ID_PATTERN)]

log = logging.getLogger(__name__)
router = APIRouter(tags=["jobs"])


@router.get("/jobs/{job_id}", response_model=JobStatus, name="job_status", responses={404: {}})
async def job_status(job_id: JobId, store: StoreDep) -> JobStatus:
    """Status, timestamps, queue position, and the result or the error."""
    status = await store.status(job_id)
    if status is None:
        raise JobNotFound(f"no job {job_id!r}: never accepted, or its results have expired")
    return JobStatus.model_validate(status)


@router.delete("/jobs/{job_id}", response_model=JobStatus, responses={404: {}, 409: {}})
async def cancel_job(job_id: JobId, store: StoreDep, events: EventsDep) -> JobStatus:
    """Cancel the job: a queued job never reaches the model server, a running one is
    stopped (its model-server connection closed). Requests waiting for it get 409; a job
    submitted without waiting has its ``job.cancelled`` event sent to webhooks."""
    outcome = await store.cancel(job_id)
    if outcome == "cancelled" and events.for_jobs and await store.notified(job_id):
        try:
            await events.emit("job.cancelled", job_id)
        except HTTPException as exc:  # the job is cancelled all the same
            log.warning("job %s cancelled, but its webhook event was not queued: %s", job_id, exc.detail)
    status = await store.status(job_id)
    if outcome == "unknown" or status is None:
        raise JobNotFound(f"no job {job_id!r}: never accepted, or its results have expired")
    if status["status"] != "cancelled":
        raise JobConflict(f"job {job_id!r} has already finished: {status['status']}")
    return JobStatus.model_validate(status)
