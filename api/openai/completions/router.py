"""``POST /v1/completions``: run as an ``llm.complete`` job, answered whole or streamed."""

from typing import Any

from fastapi import APIRouter, Response

from api.deps import TenantDep, TimingDep
from api.limits import RequestModels
from api.native.types import new_job_id
from api.openai.chat.serving import OpenAIJobs
from api.openai.completions.serving import completion_job
from api.openai.http import OPENAI_ANSWERS, IdempotencyKey, LastEventId, OpenAIRoute
from api.openai.types import ErrorBody
from shared.contract import TaskName


def completions_router(models: RequestModels, jobs: OpenAIJobs, route_class: type[OpenAIRoute]) -> APIRouter:
    """``/v1/completions``, with the request body of `models`."""
    router = APIRouter(prefix="/v1", route_class=route_class, tags=["openai"], responses={400: {"model": ErrorBody}})

    @router.post("/completions", response_model=None, responses=OPENAI_ANSWERS)
    async def completions(
        body: models.openai_completion,  # type: ignore[name-defined]
        tenant: TenantDep,
        timing: TimingDep,
        idempotency_key: IdempotencyKey = None,
        last_event_id: LastEventId = None,
    ) -> dict[str, Any] | Response:
        """OpenAI's text completion, run as an ``llm.complete`` job: the model server's own
        /v1/completions, with no chat template."""
        job = completion_job(body)
        job_id = idempotency_key or new_job_id()
        return await jobs.answer(tenant, TaskName.COMPLETE, job_id, job, body, last_event_id, timing)

    return router
