"""``POST /v1/chat/completions``: run as an ``llm.chat`` job, answered whole or streamed.

Each request is a job on the same queue and workers as ``/generate``; the
``Idempotency-Key`` header plays the role of ``job_id``."""

from typing import Any

from fastapi import APIRouter, Response

from api.deps import TenantDep, TimingDep
from api.jobs.admission import check_tokens
from api.limits import RequestModels
from api.native.types import new_job_id
from api.openai.chat.serving import OpenAIJobs, chat_job
from api.openai.http import OPENAI_ANSWERS, IdempotencyKey, LastEventId, OpenAIRoute
from api.openai.types import ErrorBody
from shared.config import Config
from shared.contract import TaskName


def chat_router(models: RequestModels, jobs: OpenAIJobs, config: Config, route_class: type[OpenAIRoute]) -> APIRouter:
    """``/v1/chat/completions``, with the request body of `models`."""
    router = APIRouter(prefix="/v1", route_class=route_class, tags=["openai"], responses={400: {"model": ErrorBody}})

    @router.post("/chat/completions", response_model=None, responses=OPENAI_ANSWERS)
    async def chat_completions(
        body: models.openai_chat,  # type: ignore[name-defined]
        tenant: TenantDep,
        timing: TimingDep,
        idempotency_key: IdempotencyKey = None,
        last_event_id: LastEventId = None,
    ) -> dict[str, Any] | Response:
        """OpenAI's chat completion, run as an ``llm.chat`` job; streamed with ``stream: true``."""
        check_tokens(config, body.max_tokens, "max_tokens")
        check_tokens(config, body.max_completion_tokens, "max_completion_tokens")
        job_id = idempotency_key or new_job_id()
        return await jobs.answer(tenant, TaskName.CHAT, job_id, chat_job(body), body, last_event_id, timing)

    return router
