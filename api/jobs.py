"""Running one job: watch for its result, queue it, await the answer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import HTTPException

from api.errors import JobCancelled, JobFailed, JobTimedOut, error_for_failure
from api.job_queue import JobQueue
from api.result_waiter import ResultWaiter
from settings import Config

log = logging.getLogger(__name__)


class JobRunner:
    """Queues jobs and awaits their results; one per API process."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._queue = JobQueue(config)
        self._waiter = ResultWaiter(config)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[JobRunner]:
        """Lifespan: connect at start-up, disconnect at shut-down."""
        await self._waiter.start()
        await asyncio.get_running_loop().run_in_executor(None, self._queue.warm_up)
        try:
            yield self
        finally:
            await self._waiter.close()
            self._queue.close()

    async def run(self, task_name: str, job_id: str, job: dict[str, Any]) -> dict[str, Any]:
        """Queue `job` as `task_name` and return the task's result, or raise the HTTP error."""
        async with self._waiter.watch(job_id) as result:
            # Subscribed before publishing: the result cannot be missed. A result
            # already stored under this job_id is that job's answer: not run again.
            if not result.done():
                await self._queue.submit(task_name, job_id, job)
            try:
                meta = await asyncio.wait_for(asyncio.shield(result), self._config.wait_timeout)
            except TimeoutError:
                raise JobTimedOut(
                    f"job {job_id} did not finish within {self._config.wait_timeout:g}s; it is still queued or running",
                ) from None
        return _outcome(job_id, meta)


def _outcome(job_id: str, meta: dict[str, Any]) -> dict[str, Any]:
    status = meta.get("status")
    result = meta.get("result")
    if status == "SUCCESS" and isinstance(result, dict):
        return result
    if status == "REVOKED":
        raise JobCancelled(f"job {job_id} was cancelled")
    if status == "FAILURE" and isinstance(result, dict):
        exc_type = str(result.get("exc_type", "Exception"))
        args = result.get("exc_message")
        error: HTTPException = error_for_failure(exc_type, args if isinstance(args, list) else [args])
        log.info("job %s failed: %s: %s", job_id, exc_type, error.detail)
        raise error
    raise JobFailed(f"job {job_id} ended with an unreadable result ({status})")
