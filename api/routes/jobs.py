"""The jobs resource: ``GET /jobs/{job_id}`` (where a job is, its result or error) and
``DELETE /jobs/{job_id}`` (cancel it)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from api.deps import StoreDep
from api.errors import JobConflict, JobNotFound
from api.schemas import JOB_ID_PATTERN, JobStatus

JobId = Annotated[str, Path(pattern=JOB_ID_PATTERN)]

router = APIRouter(tags=["jobs"])


@router.get("/jobs/{job_id}", response_model=JobStatus, name="job_status", responses={404: {}})
async def job_status(job_id: JobId, store: StoreDep) -> JobStatus:
    """Status, timestamps, queue position, and the result or the error."""
    status = await store.status(job_id)
    if status is None:
        raise JobNotFound(f"no job {job_id!r}: never accepted, or its results have expired")
    return JobStatus.model_validate(status)


@router.delete("/jobs/{job_id}", response_model=JobStatus, responses={404: {}, 409: {}})
async def cancel_job(job_id: JobId, store: StoreDep) -> JobStatus:
    """Cancel the job: a queued job never reaches the model server, a running one is
    stopped (its model-server connection closed). Requests waiting for it get 409."""
    outcome = await store.cancel(job_id)
    status = await store.status(job_id)
    if outcome == "unknown" or status is None:
        raise JobNotFound(f"no job {job_id!r}: never accepted, or its results have expired")
    if status["status"] != "cancelled":
        raise JobConflict(f"job {job_id!r} has already finished: {status['status']}")
    return JobStatus.model_validate(status)
