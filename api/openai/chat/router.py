"""OpenAI-compatible endpoints: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/models``.

Each request is a job on the same queue and workers as ``/generate``; the
``Idempotency-Key`` header plays the role of ``job_id``. Errors come in OpenAI's
format (``{"error": {"message", "type", "param", "code"}}``) with the status codes
the ``openai`` client maps to its exception classes.
"""

import time
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from api.deps import TenantDep
from api.http.route_class import GatewayRoute, Refused
from api.http.sse import last_event_id, open_stream, sse, stream_response
from api.http.statuses import Refusal
from api.jobs.admission import check_tokens
from api.jobs.route import JobRoute, JobRouting
from api.jobs.runner import JobRunner
from api.limits import RequestModels
from api.native.types import JOB_ID_PATTERN, new_job_id
from api.openai.chat.serving import (
    ERROR_TYPES,
    chat_job,
    choices,
    completion_job,
    embedding_answer,
    embedding_job,
    no_embedding_fallbacks,
    usage,
    whole_answer,
)
from api.openai.chat.types import ErrorBody, ModelCard, ModelList
from api.openai.embeddings.types import EmbeddingsRequest
from shared.config import Config
from shared.contract import TaskName
from shared.registry import Registry
from shared.tenants import Tenant

MODELS_CACHE_SECONDS = 30


IdempotencyKey = Annotated[
    str | None, Header(pattern=JOB_ID_PATTERN, description="plays the role of job_id: one job per key")
]
LastEventId = Annotated[
    str | None,
    Header(
        description="resuming a stream whose connection dropped: the id of the last event had; the same request"
        " (its Idempotency-Key) sent again gets the events after it"
    ),
]


def openai_error(refused: Refusal) -> dict[str, Any]:
    """An error in OpenAI's format."""
    kind = ERROR_TYPES.get(refused.status, "api_error")
    return {"error": {"message": refused.message, "type": kind, "param": refused.param, "code": refused.status}}


class OpenAIRoute(GatewayRoute):
    """A route whose every error is answered in OpenAI's format; a body that does not
    validate is a 400, as OpenAI answers it (the ``openai`` SDK's BadRequestError)."""

    def answer_error(self, request: Request, refused: Refusal, exc: Refused) -> Response:
        status = 400 if isinstance(exc, RequestValidationError) else refused.status
        refused = Refusal(status, refused.message, refused.cause, refused.headers, refused.param)
        return JSONResponse(openai_error(refused), status_code=status, headers=refused.headers)


# The whole answer as JSON, or with "stream": true, chunks as server-sent events.
OPENAI_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "text/event-stream": {},
        }
    }
}


class OpenAIJobs:
    """The OpenAI endpoints' work: a request made a job, routed, and answered in OpenAI's
    objects, whole or as chunks."""

    def __init__(self, config: Config, routing: JobRouting, runner: JobRunner) -> None:
        self._config = config
        self._routing = routing
        self._runner = runner

    async def answer(
        self, tenant: Tenant, task: TaskName, job_id: str, job: dict[str, Any], body: Any, resume: str | None = None
    ) -> Any:
        """The answer to `body`, run as `job`: OpenAI's whole object, or its chunks (those
        after the event `resume` names, for a client that comes back)."""
        kind = "chat" if task == TaskName.CHAT else "completion"
        route, job = self._routing.route(task, job_id, job, tenant)
        if body.stream:
            return await self._streamed(route, job, body, kind, last_event_id(resume))
        result = await self._runner.run(route, job, self._config.wait_timeout)
        return whole_answer(kind, job_id, result, body.model)

    async def embed(self, tenant: Tenant, job_id: str, body: EmbeddingsRequest) -> dict[str, Any]:
        """OpenAI's embeddings of `body`'s inputs, run as an ``llm.embed`` job."""
        route, job = self._routing.route(TaskName.EMBED, job_id, embedding_job(body), tenant)
        job = no_embedding_fallbacks(job)
        result = await self._runner.run(route, job, self._config.wait_timeout)
        return embedding_answer(result, body.encoding_format, body.model)

    async def served_models(self, registry: Registry, tenant: Tenant) -> list[str]:
        """The models of the registry; with INNER_LLM_URL alone, those its model server
        serves (asked through the queue, kept 30 s)."""
        if not registry.passthrough:
            return registry.names()
        window = int(time.time() // MODELS_CACHE_SECONDS)
        route, job = self._routing.route(TaskName.MODELS, f"models-{window}", {}, tenant)
        result = await self._runner.run(route, job, min(self._config.wait_timeout, 30.0))
        return [str(name) for name in result.get("models", [])]

    async def _streamed(
        self, route: JobRoute, job: dict[str, Any], body: Any, kind: str, after: int | None
    ) -> Response:
        """OpenAI's chunk format: one chunk per piece, the finish reasons, usage if asked, [DONE]."""
        events = await open_stream(self._runner, route, job)
        # `created`: when the first piece was written, so that every reader of the stream
        # (one that comes back included) gets the same chunks.
        base: dict[str, Any] = {"id": f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{route.job_id}", "created": 0}
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
            if not base["created"]:
                base["created"] = int(event.get("at") or time.time())
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

        def render_error(refused: Refusal) -> str:
            error = openai_error(refused)
            del error["error"]["param"]
            return sse(error)

        return stream_response(self._runner, route, events, render, render_error, after)


def openai_router(
    models: RequestModels, jobs: OpenAIJobs, registry: Registry, config: Config, route_class: type[OpenAIRoute]
) -> APIRouter:
    """The OpenAI-compatible endpoints, with the request bodies of `models`."""
    router = APIRouter(prefix="/v1", route_class=route_class, tags=["openai"], responses={400: {"model": ErrorBody}})

    @router.post("/chat/completions", response_model=None, responses=OPENAI_ANSWERS)
    async def chat_completions(
        body: models.openai_chat,  # type: ignore[name-defined]
        tenant: TenantDep,
        idempotency_key: IdempotencyKey = None,
        last_event_id: LastEventId = None,
    ) -> dict[str, Any] | Response:
        """OpenAI's chat completion, run as an ``llm.chat`` job; streamed with ``stream: true``."""
        check_tokens(config, body.max_tokens, "max_tokens")
        check_tokens(config, body.max_completion_tokens, "max_completion_tokens")
        job_id = idempotency_key or new_job_id()
        return await jobs.answer(tenant, TaskName.CHAT, job_id, chat_job(body), body, last_event_id)

    @router.post("/completions", response_model=None, responses=OPENAI_ANSWERS)
    async def completions(
        body: models.openai_completion,  # type: ignore[name-defined]
        tenant: TenantDep,
        idempotency_key: IdempotencyKey = None,
        last_event_id: LastEventId = None,
    ) -> dict[str, Any] | Response:
        """OpenAI's text completion, run as an ``llm.complete`` job: the model server's own
        /v1/completions, with no chat template."""
        job = completion_job(body)
        job_id = idempotency_key or new_job_id()
        return await jobs.answer(tenant, TaskName.COMPLETE, job_id, job, body, last_event_id)

    @router.post("/embeddings", response_model=None)
    async def embeddings(
        body: models.embeddings,  # type: ignore[name-defined]
        tenant: TenantDep,
        idempotency_key: IdempotencyKey = None,
    ) -> dict[str, Any]:
        """OpenAI's embeddings, run as an ``llm.embed`` job; jobs of a model arriving
        together share one model-server call (docs/embeddings.md)."""
        return await jobs.embed(tenant, idempotency_key or new_job_id(), body)

    @router.get("/models", response_model=ModelList, summary="Models", operation_id="models_v1_models_get")
    async def served_models(tenant: TenantDep) -> ModelList:
        """The models of the registry; with INNER_LLM_URL alone, those its model server
        serves (asked through the queue, kept 30 s)."""
        return ModelList(data=[ModelCard(id=name) for name in await jobs.served_models(registry, tenant)])

    return router
