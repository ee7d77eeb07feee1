"""The spec's endpoints: ``POST /generate`` and ``POST /chat_completion``; their work is
api/native/serving.py's."""

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response
from fastapi.routing import APIRoute

from api.deps import TenantDep, TimingDep
from api.limits import RequestModels
from api.native.serving import SpecJobs
from api.native.types import CompletionResponse, JobAccepted
from shared.contract import TaskName

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


def spec_router(models: RequestModels, jobs: SpecJobs, route_class: type[APIRoute]) -> APIRouter:
    """The spec's endpoints, with the request bodies of `models` (the deployment's limits)."""
    router = APIRouter(responses=ERROR_RESPONSES, route_class=route_class, tags=["generation"])

    @router.post("/generate", response_model=CompletionResponse, responses=STREAMED)
    async def generate(
        body: models.generate,  # type: ignore[name-defined]
        tenant: TenantDep,
        timing: TimingDep,
        wait: Wait = None,
        prefer: Prefer = None,
        accept: Accept = None,
        queue_name: QueueName = None,
        last_event_id: LastEventId = None,
    ) -> CompletionResponse | Response:
        """Generate one message from `content`."""
        return await jobs.answer(
            tenant, TaskName.GENERATE, body, wait, prefer, accept, queue_name, last_event_id, timing
        )

    @router.post("/chat_completion", response_model=CompletionResponse, responses=STREAMED)
    async def chat_completion(
        body: models.chat,  # type: ignore[name-defined]
        tenant: TenantDep,
        timing: TimingDep,
        wait: Wait = None,
        prefer: Prefer = None,
        accept: Accept = None,
        queue_name: QueueName = None,
        last_event_id: LastEventId = None,
    ) -> CompletionResponse | Response:
        """Continue the conversation in `messages`."""
        return await jobs.answer(tenant, TaskName.CHAT, body, wait, prefer, accept, queue_name, last_event_id, timing)

    return router
