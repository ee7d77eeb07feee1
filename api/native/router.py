"""The spec's endpoints: ``POST /generate`` and ``POST /chat_completion``."""

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute

from api.deps import TenantDep
from api.http.sse import last_event_id, open_stream, sse, stream_response
from api.http.statuses import Refusal
from api.jobs.route import JobRoute, JobRouting
from api.jobs.runner import JobRunner
from api.limits import RequestModels
from api.native.types import ChatCompletionRequest, CompletionResponse, GenerateRequest, JobAccepted
from shared.config import Config
from shared.contract import TaskName
from shared.tenants import Tenant

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"model": JobAccepted, "description": "Accepted without waiting (wait=0 or Prefer: respond-async)"},
    400: {"description": "The model server rejected the request"},
    401: {"description": "No API key, or not a valid one (when API keys are configured)"},
    404: {"description": "Unknown model, or a queue_name no model is served from"},
    409: {"description": "The job was cancelled, or its job_id belongs to a job with another body"},
    413: {"description": "The request body is larger than MAX_BODY_BYTES"},
    422: {"description": "The body is invalid, exceeds a configured limit, or the model server rejected it"},
    429: {
        "description": "Too many jobs waiting (MAX_QUEUED_JOBS) or requests (RATE_LIMIT_PER_MINUTE); see Retry-After"
    },
    502: {"description": "The model server is unreachable or failing"},
    503: {"description": "The broker or the result store is unavailable"},
    504: {"description": "The job did not finish within the wait (it goes on), or the model server timed out"},
}

# With "stream": true or Accept: text/event-stream, the answer is a stream of events.
STREAMED: dict[int | str, dict[str, Any]] = {200: {"content": {"text/event-stream": {}}}}

Wait = Annotated[
    float | None,
    Query(ge=0, description="seconds to wait for the answer (at most WAIT_TIMEOUT); 0: answer 202 at once"),
]
Prefer = Annotated[str | None, Header(description="`respond-async`: answer 202 at once")]
QueueName = Annotated[
    str | None,
    Query(
        max_length=256,
        description="the queue to send the job to (ProtoLLM's SDK): a model's queue, or QUEUE_NAME for the default"
        " model; 404 names the known queues",
    ),
]
Accept = Annotated[str | None, Header(description="`text/event-stream`: stream the answer")]
LastEventId = Annotated[
    str | None,
    Header(
        description="resuming a stream whose connection dropped: the id of the last event had; the same request"
        " (its job_id) sent again gets the events after it"
    ),
]


def spec_stream(runner: JobRunner, route: JobRoute, events: Any, after: int | None = None) -> StreamingResponse:
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

    return stream_response(runner, route, events, render, render_error, after)


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
    ) -> CompletionResponse | Response:
        """Queue `tenant`'s job; answer with its result, its stream, or (not waiting) where to find it."""
        config, runner = self._config, self._runner
        job = body.model_dump(exclude={"job_id", "stream", "priority", "source"})
        if body.priority is not None and "priority" not in body.meta.model_fields_set:
            job["meta"]["priority"] = body.priority
        if queue_name is not None:
            job["meta"] = self._routing.meta_for_queue(queue_name, job["meta"])
        route, job = self._routing.route(task, body.job_id, job, tenant)
        if body.stream or "text/event-stream" in (accept or ""):
            return spec_stream(runner, route, await open_stream(runner, route, job), last_event_id(resume))
        seconds = config.wait_timeout if wait is None else min(wait, config.wait_timeout)
        if seconds == 0 or "respond-async" in (prefer or "").lower():
            await runner.submit(route, job)
            # Not from the request's Host header, which the client chose.
            url = f"{config.public_base_url}/jobs/{route.job_id}"
            accepted = JobAccepted(job_id=route.job_id, tenant=tenant.name, status="queued", status_url=url)
            return JSONResponse(accepted.model_dump(), status_code=202, headers={"Location": url})
        result = await runner.run(route, job, seconds)
        return CompletionResponse(content=result["content"], job_id=route.job_id)


def spec_router(models: RequestModels, jobs: SpecJobs, route_class: type[APIRoute]) -> APIRouter:
    """The spec's endpoints, with the request bodies of `models` (the deployment's limits)."""
    router = APIRouter(responses=ERROR_RESPONSES, route_class=route_class, tags=["generation"])

    @router.post("/generate", response_model=CompletionResponse, responses=STREAMED)
    async def generate(
        body: models.generate,  # type: ignore[name-defined]
        tenant: TenantDep,
        wait: Wait = None,
        prefer: Prefer = None,
        accept: Accept = None,
        queue_name: QueueName = None,
        last_event_id: LastEventId = None,
    ) -> CompletionResponse | Response:
        """Generate one message from `content`."""
        return await jobs.answer(tenant, TaskName.GENERATE, body, wait, prefer, accept, queue_name, last_event_id)

    @router.post("/chat_completion", response_model=CompletionResponse, responses=STREAMED)
    async def chat_completion(
        body: models.chat,  # type: ignore[name-defined]
        tenant: TenantDep,
        wait: Wait = None,
        prefer: Prefer = None,
        accept: Accept = None,
        queue_name: QueueName = None,
        last_event_id: LastEventId = None,
    ) -> CompletionResponse | Response:
        """Continue the conversation in `messages`."""
        return await jobs.answer(tenant, TaskName.CHAT, body, wait, prefer, accept, queue_name, last_event_id)

    return router
