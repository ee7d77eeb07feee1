"""The spec's router: ``POST /generate`` and ``POST /chat_completion``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from api.jobs import JobRunner
from api.schemas import ChatCompletionRequest, CompletionResponse, GenerateRequest
from settings import Config

GENERATE_TASK = "llm.generate"
CHAT_TASK = "llm.chat"

ERROR_RESPONSES: dict[int | str, dict[str, str]] = {
    409: {"description": "The job was cancelled"},
    422: {"description": "The body is invalid, or the model server rejected the request"},
    502: {"description": "The model server is unreachable or failing"},
    503: {"description": "The broker or the result store is unavailable"},
    504: {"description": "The job or the model server did not finish in time"},
}


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

    router = APIRouter(lifespan=lifespan, tags=["generation"], responses=ERROR_RESPONSES)

    @router.post("/generate", response_model=CompletionResponse)
    async def generate(request: GenerateRequest) -> CompletionResponse:
        """Generate one message from `content`."""
        job = request.model_dump(exclude={"job_id"})
        result = await runner.run(GENERATE_TASK, request.job_id, job)
        return CompletionResponse(content=result["content"], job_id=request.job_id)

    @router.post("/chat_completion", response_model=CompletionResponse)
    async def chat_completion(request: ChatCompletionRequest) -> CompletionResponse:
        """Continue the conversation in `messages`."""
        job = request.model_dump(exclude={"job_id"})
        result = await runner.run(CHAT_TASK, request.job_id, job)
        return CompletionResponse(content=result["content"], job_id=request.job_id)

    return router
