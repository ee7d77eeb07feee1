"""Chat completions (and text completions, answered by the same code in their own
objects): a request made an ``llm.chat`` job, and a job's result as OpenAI's
chat.completion (or text_completion) object, whole or as chunks; batches' lines share it."""

from __future__ import annotations

import time
from typing import Any

from fastapi import Response

from api.http.sse import last_event_id, open_stream, sse, stream_response
from api.http.statuses import Refusal
from api.jobs.route import JobRoute, JobRouting
from api.jobs.runner import JobRunner
from api.observability.server_timing import Timing
from api.openai.chat.types import CHAT_PASSED_ON, OpenAIChatRequest
from api.openai.http import openai_error
from shared.config import Config
from shared.contract import TaskName
from shared.tenants import Tenant


def chat_job(body: OpenAIChatRequest) -> dict[str, Any]:
    """The ``llm.chat`` job of a chat completion request."""
    request = {"messages": [message.wire() for message in body.messages], **body.passed_on(CHAT_PASSED_ON)}
    job = {"meta": body.meta(body.max_completion_tokens or body.max_tokens), "openai": request}
    return body.with_fallbacks(job)


def usage(result: dict[str, Any]) -> dict[str, Any]:
    """The answer's usage: its tokens, and the prompt's cached ones where the model server
    told them (``prompt_tokens_details.cached_tokens``: what usage and costs count at the
    cached input price)."""
    usage = result.get("usage") or {}
    counted = {
        "prompt_tokens": int(usage.get("prompt_tokens") or 0),
        "completion_tokens": int(usage.get("completion_tokens") or 0),
        "total_tokens": int(usage.get("total_tokens") or 0),
    }
    details = usage.get("prompt_tokens_details")
    if isinstance(details, dict) and isinstance(details.get("cached_tokens"), int):
        counted["prompt_tokens_details"] = {"cached_tokens": details["cached_tokens"]}
    return counted


def choices(result: dict[str, Any]) -> list[dict[str, Any]]:
    default = {"index": 0, "content": result.get("content", ""), "finish_reason": result.get("finish_reason")}
    return result.get("choices") or [default]


def whole_answer(kind: str, job_id: str, result: dict[str, Any], model: str | None) -> dict[str, Any]:
    """A finished job's answer as OpenAI's chat.completion or text_completion object."""

    def choice(c: dict[str, Any]) -> dict[str, Any]:
        if kind != "chat":
            said: dict[str, Any] = {"text": c["content"]}
        else:
            calls = c.get("tool_calls")
            message: dict[str, Any] = {"role": "assistant", "content": c["content"] or (None if calls else "")}
            if calls:
                message["tool_calls"] = calls
            if c.get("reasoning_content"):  # a reasoning server's, as vLLM and llama.cpp name it
                message["reasoning_content"] = c["reasoning_content"]
            said = {"message": message}
        finish = c["finish_reason"] or ("tool_calls" if c.get("tool_calls") else "stop")
        return {"index": c["index"], **said, "finish_reason": finish, "logprobs": c.get("logprobs")}

    return {
        "id": f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{job_id}",
        "object": "chat.completion" if kind == "chat" else "text_completion",
        "created": int(time.time()),
        "model": result.get("model") or model or "",
        "choices": [choice(c) for c in choices(result)],
        "usage": usage(result),
    }


class OpenAIJobs:
    """Chat and text completions' work: a request made a job, routed, and answered in
    OpenAI's objects, whole or as chunks."""

    def __init__(self, config: Config, routing: JobRouting, runner: JobRunner) -> None:
        self._config = config
        self._routing = routing
        self._runner = runner

    async def answer(
        self,
        tenant: Tenant,
        task: TaskName,
        job_id: str,
        job: dict[str, Any],
        body: Any,
        resume: str | None,
        timing: Timing,
    ) -> Any:
        """The answer to `body`, run as `job`: OpenAI's whole object, or its chunks (those
        after the event `resume` names, for a client that comes back); the request's
        `timing` told of the job."""
        kind = "chat" if task == TaskName.CHAT else "completion"
        route, job = self._routing.route(task, job_id, job, tenant)
        timing.ran(route)
        if body.stream:
            return await self._streamed(route, job, body, kind, last_event_id(resume), timing)
        result = await self._runner.run(route, job, self._config.wait_timeout)
        timing.ran(route, result)
        return whole_answer(kind, job_id, result, body.model)

    async def _streamed(
        self, route: JobRoute, job: dict[str, Any], body: Any, kind: str, after: int | None, timing: Timing
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
            if extra and extra.get("reasoning_content"):
                delta["reasoning_content"] = extra["reasoning_content"]
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

        return stream_response(self._runner, route, events, render, render_error, after, timing=timing)
