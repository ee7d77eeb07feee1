"""The spec's router: ``POST /generate`` and ``POST /chat_completion``, plus ``GET /jobs/{id}``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Header, Query, Request
from fastapi.responses import JSONResponse

from api.job_status import job_status_router
from api.jobs import JobRunner
from api.openai_compat import openai_router
from api.schemas import ChatCompletionRequest, CompletionResponse, GenerateRequest, JobAccepted
from settings import Config

GENERATE_TASK = "llm.generate"
CHAT_TASK = "llm.chat"

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"model": JobAccepted, "description": "Accepted without waiting (wait=0 or Prefer: respond-async)"},
    409: {"description": "The job was cancelled, or its job_id belongs to a job with another body"},
    422: {"description": "The body is invalid, or the model server rejected the request"},
    502: {"description": "The model server is unreachable or failing"},
    503: {"description": "The broker or the result store is unavailable"},
    504: {"description": "The job did not finish within the wait (it goes on), or the model server timed out"},
}

Wait = Annotated[
    float | None,
    Query(ge=0, description="seconds to wait for the answer (at most WAIT_TIMEOUT); 0: answer 202 at once"),
]
Prefer = Annotated[str | None, Header(description="`respond-async`: answer 202 at once")]


def get_router(config: Config) -> APIRouter:
    """The spec's endpoints, queuing jobs on the broker and awaiting them in Redis.

    The router brings its own lifespan (connections to the broker and Redis), which
    FastAPI runs when the router is included in an app.
    """
    runner = JobRunner(config)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with runner.running():
            yield

    router = APIRouter(lifespan=lifespan, responses=ERROR_RESPONSES)

    async def answer(
        request: Request, task: str, job_id: str, job: dict[str, Any], wait: float | None, prefer: str | None
    ) -> CompletionResponse | JSONResponse:
        seconds = config.wait_timeout if wait is None else min(wait, config.wait_timeout)
        if seconds == 0 or "respond-async" in (prefer or "").lower():
            await runner.submit(task, job_id, job)
            url = str(request.url_for("job_status", job_id=job_id))
            accepted = JobAccepted(job_id=job_id, status="queued", status_url=url)
            return JSONResponse(accepted.model_dump(), status_code=202, headers={"Location": url})
        result = await runner.run(task, job_id, job, seconds)
        return CompletionResponse(content=result["content"], job_id=job_id)

    @router.post("/generate", response_model=CompletionResponse, tags=["generation"])
    async def generate(
        request: Request, body: GenerateRequest, wait: Wait = None, prefer: Prefer = None
    ) -> CompletionResponse | JSONResponse:
        """Generate one message from `content`."""
        return await answer(request, GENERATE_TASK, body.job_id, body.model_dump(exclude={"job_id"}), wait, prefer)

    @router.post("/chat_completion", response_model=CompletionResponse, tags=["generation"])
    async def chat_completion(
        request: Request, body: ChatCompletionRequest, wait: Wait = None, prefer: Prefer = None
    ) -> CompletionResponse | JSONResponse:
        """Continue the conversation in `messages`."""
        return await answer(request, CHAT_TASK, body.job_id, body.model_dump(exclude={"job_id"}), wait, prefer)

    router.include_router(job_status_router(runner))
    router.include_router(openai_router(runner, config))
    return router
