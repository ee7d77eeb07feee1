"""``GET /jobs/{job_id}``: where a job is, and its result or error once it has one."""

from __future__ import annotations

from fastapi import APIRouter

from api.errors import JobNotFound
from api.jobs import JobRunner
from api.schemas import JobStatus


def job_status_router(runner: JobRunner) -> APIRouter:
    """The jobs resource of the gateway served by `runner`."""
    router = APIRouter(tags=["jobs"])

    @router.get("/jobs/{job_id}", response_model=JobStatus, name="job_status", responses={404: {}})
    async def job_status(job_id: str) -> JobStatus:
        """Status, timestamps, queue position, and the result or the error."""
        status = await runner.store.status(job_id)
        if status is None:
            raise JobNotFound(f"no job {job_id!r}: never accepted, or its results have expired")
        return JobStatus.model_validate(status)

    return router
