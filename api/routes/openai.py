"""OpenAI-compatible endpoints: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/models``.

Each request is a job on the same queue and workers as ``/generate``; the
``Idempotency-Key`` header plays the role of ``job_id``. Errors come in OpenAI's
format (``{"error": {"message", "type", "param", "code"}}``) with the status codes
the ``openai`` client maps to its exception classes.
"""

import time
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.deps import ConfigDep, RegistryDep, RunnerDep, TenantDep
from api.http.route_class import GatewayRoute
from api.http.sse import open_stream, sse, stream_response
from api.jobs.openai import ERROR_TYPES, chat_job, choices, completion_job, usage, whole_answer
from api.jobs.runner import JobRunner
from api.schemas.limits import RequestModels
from api.schemas.native import JOB_ID_PATTERN, new_job_id
from api.schemas.openai import ErrorBody, ModelCard, ModelList
from api.tenancy.guard import check_tokens
from shared.contract import TaskName
from shared.tenants import Tenant

MODELS_CACHE_SECONDS = 30


IdempotencyKey = Annotated[
    str | None, Header(pattern=JOB_ID_PATTERN, description="plays the role of job_id: one job per key")
]


def openai_error(
    status: int, message: str, param: str | None = None, headers: dict[str, str] | None = None
) -> Response:
    """An error in OpenAI's format."""
    body = {"error": {"message": message, "type": ERROR_TYPES.get(status, "api_error"), "param": param, "code": status}}
    return JSONResponse(body, status_code=status, headers=headers)


class OpenAIRoute(GatewayRoute):
    """A route whose every error, validation included, is answered in OpenAI's format."""

    def answer_error(self, request: Request, exc: Exception) -> Response | None:
        if isinstance(exc, RequestValidationError):
            first = exc.errors()[0]
            param = ".".join(str(part) for part in first.get("loc", ())[1:]) or None
            return openai_error(400, f"{param or 'body'}: {first.get('msg')}", param)
        if isinstance(exc, StarletteHTTPException):  # FastAPI's HTTPException, and Starlette's own
            return openai_error(exc.status_code, str(exc.detail), headers=exc.headers)
        return None


# The whole answer as JSON, or with "stream": true, chunks as server-sent events.
OPENAI_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "text/event-stream": {},
        }
    }
}


def openai_router(models: RequestModels) -> APIRouter:
    """The OpenAI-compatible endpoints, with the request bodies of `models`."""
    router = APIRouter(
        prefix="/v1",
        route_class=OpenAIRoute,
        tags=["openai"],
        responses={400: {"model": ErrorBody}},
    )

    async def streamed(
        runner: JobRunner, tenant: Tenant, task: str, job_id: str, job: dict[str, Any], body: Any, kind: str
    ) -> Response:
        """OpenAI's chunk format: one chunk per piece, the finish reasons, usage if asked, [DONE]."""
        events = await open_stream(runner, task, job_id, job, tenant)
        base = {"id": f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{job_id}", "created": int(time.time())}
        base["object"] = "chat.completion.chunk" if kind == "chat" else "text_completion"
        model = body.model or ""
        include_usage = bool((body.stream_options or {}).get("include_usage"))
        started: set[int] = set()

        def piece(
            index: int, text: str | None, finish: str | None, extra: dict[str, Any] | None = None
        ) -> dict[str, Any]:
            logprobs = (extra or {}).get("logprobs")
            if kind != "chat":
                return {"index": index, "text": text or "", "finish_reason": finish, "logprobs": logprobs}
            delta: dict[str, Any] = {"content": text} if text else {}
            if extra and extra.get("tool_calls"):
                delta["tool_calls"] = extra["tool_calls"]
            if delta and index not in started:
                started.add(index)
                delta = {"role": "assistant", **delta}
            chunk = {"index": index, "delta": delta, "finish_reason": finish}
            if logprobs is not None:
                chunk["logprobs"] = logprobs
            return chunk

        def render(event: dict[str, Any]) -> list[str]:
            if "end" not in event:
                chunk = piece(event["index"], event["text"], None, event.get("extra"))
                return [sse({**base, "model": model, "choices": [chunk]})]
            end = event["end"]
            final_model = end.get("model") or model
            ends = [
                piece(c["index"], None, c["finish_reason"] or ("tool_calls" if c.get("tool_calls") else "stop"))
                for c in choices(end)
            ]
            out = [sse({**base, "model": final_model, "choices": ends})]
            if include_usage:
                out.append(sse({**base, "model": final_model, "choices": [], "usage": usage(end)}))
            return [*out, "data: [DONE]\n\n"]

        def render_error(exc: HTTPException) -> str:
            return sse(
                {
                    "error": {
                        "message": str(exc.detail),
                        "type": ERROR_TYPES.get(exc.status_code, "api_error"),
                        "code": exc.status_code,
                    }
                }
            )

        return stream_response(runner, tenant, job_id, events, render, render_error)

    @router.post("/chat/completions", response_model=None, responses=OPENAI_ANSWERS)
    async def chat_completions(
        body: models.openai_chat,  # type: ignore[name-defined]
        runner: RunnerDep,
        config: ConfigDep,
        tenant: TenantDep,
        idempotency_key: IdempotencyKey = None,
    ) -> dict[str, Any] | Response:
        """OpenAI's chat completion, run as an ``llm.chat`` job; streamed with ``stream: true``."""
        job_id = idempotency_key or new_job_id()
        check_tokens(config, body.max_tokens, "max_tokens")
        job = chat_job(body)
        if body.stream:
            return await streamed(runner, tenant, TaskName.CHAT, job_id, job, body, "chat")
        result = await runner.run(TaskName.CHAT, job_id, job, config.wait_timeout, tenant=tenant)
        return whole_answer("chat", job_id, result, body.model)

    @router.post("/completions", response_model=None, responses=OPENAI_ANSWERS)
    async def completions(
        body: models.openai_completion,  # type: ignore[name-defined]
        runner: RunnerDep,
        config: ConfigDep,
        tenant: TenantDep,
        idempotency_key: IdempotencyKey = None,
    ) -> dict[str, Any] | Response:
        """OpenAI's text completion, run as an ``llm.complete`` job: the model server's own
        /v1/completions, with no chat template."""
        job_id = idempotency_key or new_job_id()
        job = completion_job(body)
        if body.stream:
            return await streamed(runner, tenant, TaskName.COMPLETE, job_id, job, body, "completion")
        result = await runner.run(TaskName.COMPLETE, job_id, job, config.wait_timeout, tenant=tenant)
        return whole_answer("completion", job_id, result, body.model)

    @router.get("/models", response_model=ModelList, summary="Models", operation_id="models_v1_models_get")
    async def served_models(
        runner: RunnerDep, registry: RegistryDep, config: ConfigDep, tenant: TenantDep
    ) -> ModelList:
        """The models of the registry; with INNER_LLM_URL alone, those its model server
        serves (asked through the queue, kept 30 s)."""
        if not registry.passthrough:
            return ModelList(data=[ModelCard(id=name) for name in registry.names()])
        window = int(time.time() // MODELS_CACHE_SECONDS)
        wait = min(config.wait_timeout, 30.0)
        result = await runner.run(TaskName.MODELS, f"models-{window}", {}, wait, tenant=tenant)
        return ModelList(data=[ModelCard(id=name) for name in result.get("models", [])])

    return router
