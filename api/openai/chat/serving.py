"""OpenAI's requests as jobs, and jobs' results as OpenAI's answers: what
``/v1/chat/completions``, ``/v1/completions`` and batches' lines share."""

from __future__ import annotations

import base64
import sys
import time
from array import array
from typing import Any

from api.errors import InvalidInput
from api.openai.chat.types import CHAT_PASSED_ON, COMPLETION_PASSED_ON, OpenAIChatRequest, OpenAICompletionRequest
from api.openai.embeddings.types import EmbeddingsRequest

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    502: "model_server_error",
    503: "service_unavailable_error",
    504: "timeout_error",
}


def chat_job(body: OpenAIChatRequest) -> dict[str, Any]:
    """The ``llm.chat`` job of a chat completion request."""
    request = {"messages": [message.wire() for message in body.messages], **body.passed_on(CHAT_PASSED_ON)}
    job = {"meta": body.meta(body.max_completion_tokens or body.max_tokens), "openai": request}
    return _with_fallbacks(job, body.fallbacks_asked())


def completion_job(body: OpenAICompletionRequest) -> dict[str, Any]:
    """The ``llm.complete`` job of a completion request."""
    job = {"meta": body.meta(body.max_tokens), "openai": body.passed_on(COMPLETION_PASSED_ON)}
    return _with_fallbacks(job, body.fallbacks_asked())


def embedding_job(body: EmbeddingsRequest) -> dict[str, Any]:
    """The ``llm.embed`` job of an embeddings request."""
    embed = {"input": body.inputs(), "dimensions": body.dimensions, "user": body.user, **(body.model_extra or {})}
    meta = {"model": body.model, "priority": body.priority}
    job = {"meta": meta, "embed": {k: v for k, v in embed.items() if v is not None}}
    # Checked as any request's (404 naming the field for a model the registry does not
    # list); an embedding is its model's alone, so none is sent on (OpenAIJobs.embed).
    return _with_fallbacks(job, body.fallbacks_asked())


def no_embedding_fallbacks(job: dict[str, Any]) -> dict[str, Any]:
    """An embedding job, routed (its fallbacks known to the registry): InvalidInput when it
    names a fallback model (vectors of another model are not the same space), else
    without them."""
    if job.get("fallbacks"):
        raise InvalidInput("fallbacks: an embedding is its model's alone; no other model's vectors stand in for it")
    return {key: value for key, value in job.items() if key != "fallbacks"}


def embedding_answer(result: dict[str, Any], encoding: str, model: str | None) -> dict[str, Any]:
    """An embedding job's result as OpenAI's list of embeddings, in the inputs' order:
    each vector as floats, or (``base64``) as the worker sent it, little-endian float32."""
    data = []
    for index, packed in enumerate(result.get("embeddings") or []):
        vector: Any = packed
        if encoding != "base64":
            floats = array("f", base64.b64decode(packed))
            if sys.byteorder == "big":
                floats.byteswap()
            vector = floats.tolist()
        data.append({"object": "embedding", "index": index, "embedding": vector})
    used = result.get("usage") or {}
    tokens = int(used.get("prompt_tokens") or 0)
    return {"object": "list", "data": data, "model": result.get("model") or model or "",
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}  # fmt: skip


def _with_fallbacks(job: dict[str, Any], fallbacks: list[str] | None) -> dict[str, Any]:
    return job if fallbacks is None else {**job, "fallbacks": fallbacks}


def usage(result: dict[str, Any]) -> dict[str, Any]:
    usage = result.get("usage") or {}
    return {
        "prompt_tokens": int(usage.get("prompt_tokens") or 0),
        "completion_tokens": int(usage.get("completion_tokens") or 0),
        "total_tokens": int(usage.get("total_tokens") or 0),
    }


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
