"""The spec's endpoints' work: a body made a job, routed, and answered (whole, streamed
as the spec's events, or accepted without waiting)."""

from typing import Any

from fastapi import Response
from fastapi.responses import JSONResponse, StreamingResponse

from api.http.sse import last_event_id, open_stream, sse, stream_response
from api.http.statuses import Refusal
from api.jobs.route import JobRoute, JobRouting
from api.jobs.runner import JobRunner
from api.native.types import ChatCompletionRequest, CompletionResponse, GenerateRequest, JobAccepted
from api.observability.server_timing import Timing
from shared.config import Config
from shared.contract import JobStatus, TaskName
from shared.tenants import Tenant


def spec_stream(
    runner: JobRunner, route: JobRoute, events: Any, after: int | None = None, timing: Timing | None = None
) -> StreamingResponse:
    """The spec endpoints' events: ``data: {"job_id", "content"}`` per piece, then
    ``event: done`` with the whole answer, or ``event: error`` with its status."""
    job_id = route.job_id

    def render(event: dict[str, Any]) -> list[str]:
        if "end" in event:
            end = event["end"]
            done = {"job_id": job_id, "content": end.get("content", ""), "finish_reason": end.get("finish_reason")}
            return [sse(done, "done")]
        return [sse({"job_id": job_id, "content": event["text"]})] if event["index"] == 0 and event["text"] else []

    def render_error(refused: Refusal) -> str:
        return sse({"job_id": job_id, "status": refused.status, "detail": refused.message}, "error")

    return stream_response(runner, route, events, render, render_error, after, timing=timing)


class SpecJobs:
    """The spec's endpoints' work: a body made a job, routed, and answered (whole,
    streamed, or accepted without waiting)."""

    def __init__(self, config: Config, routing: JobRouting, runner: JobRunner) -> None:
        self._config = config
        self._routing = routing
        self._runner = runner

    async def answer(
        self,
        tenant: Tenant,
        task: TaskName,
        body: GenerateRequest | ChatCompletionRequest,
        wait: float | None,
        prefer: str | None,
        accept: str | None,
        queue_name: str | None,
        resume: str | None = None,
        timing: Timing | None = None,
    ) -> CompletionResponse | Response:
        """Queue `tenant`'s job; answer with its result, its stream, or (not waiting) where to
        find it; the request's `timing` told of the job."""
        config, runner = self._config, self._runner
        timing = timing or Timing(0.0)
        job = body.model_dump(exclude={"job_id", "stream", "priority", "source"})
        if body.priority is not None and "priority" not in body.meta.model_fields_set:
            job["meta"]["priority"] = body.priority
        if queue_name is not None:
            job["meta"] = self._routing.meta_for_queue(queue_name, job["meta"], tenant)
        route, job = self._routing.route(task, body.job_id, job, tenant)
        timing.ran(route)
        if body.stream or "text/event-stream" in (accept or ""):
            events = await open_stream(runner, route, job)
            return spec_stream(runner, route, events, last_event_id(resume), timing)
        seconds = config.wait_timeout if wait is None else min(wait, config.wait_timeout)
        if seconds == 0 or "respond-async" in (prefer or "").lower():
            await runner.submit(route, job)
            # Not from the request's Host header, which the client chose.
            url = f"{config.public_base_url}/jobs/{route.job_id}"
            accepted = JobAccepted(job_id=route.job_id, tenant=tenant.name, status=JobStatus.QUEUED, status_url=url)
            return JSONResponse(accepted.model_dump(), status_code=202, headers={"Location": url})
        result = await runner.run(route, job, seconds)
        timing.ran(route, result)
        return CompletionResponse(content=result["content"], job_id=route.job_id)
