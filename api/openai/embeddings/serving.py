"""Embeddings: a request made an ``llm.embed`` job, and its result as OpenAI's list of
embeddings; batches' lines share it."""

from __future__ import annotations

from typing import Any

from api.errors import InvalidInput
from api.jobs.route import JobRouting
from api.jobs.runner import JobRunner
from api.observability.server_timing import Timing
from api.openai.embeddings.types import EmbeddingsRequest
from shared.config import Config
from shared.contract import TaskName
from shared.contract.embeddings import unpack_vector
from shared.tenants import Tenant


def embedding_job(body: EmbeddingsRequest) -> dict[str, Any]:
    """The ``llm.embed`` job of an embeddings request."""
    embed = {"input": body.inputs(), "dimensions": body.dimensions, "user": body.user, **(body.model_extra or {})}
    meta = {"model": body.model, "priority": body.priority}
    job = {"meta": meta, "embed": {k: v for k, v in embed.items() if v is not None}}
    # Checked as any request's (404 naming the field for a model the registry does not
    # list); an embedding is its model's alone, so none is sent on (Embeddings.embed).
    # None asked ([]) is as good as not asking: its model's own fallbacks (the registry's,
    # those of the same vectors) still stand in.
    return body.with_fallbacks(job) if body.fallbacks_asked() else job


def no_embedding_fallbacks(job: dict[str, Any]) -> dict[str, Any]:
    """An embedding job as asked: InvalidInput when it names a fallback model (vectors of
    another model are not the same space), else without them."""
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
            vector = unpack_vector(packed)
        data.append({"object": "embedding", "index": index, "embedding": vector})
    used = result.get("usage") or {}
    tokens = int(used.get("prompt_tokens") or 0)
    return {"object": "list", "data": data, "model": result.get("model") or model or "",
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}  # fmt: skip


class Embeddings:
    """The embeddings endpoint's work: a request made a job, routed, run, answered."""

    def __init__(self, config: Config, routing: JobRouting, runner: JobRunner) -> None:
        self._config = config
        self._routing = routing
        self._runner = runner

    async def embed(self, tenant: Tenant, job_id: str, body: EmbeddingsRequest, timing: Timing) -> dict[str, Any]:
        """OpenAI's embeddings of `body`'s inputs, run as an ``llm.embed`` job."""
        asked = embedding_job(body)
        # Routed first: a fallback the registry does not list is a 404, as on every endpoint.
        route, job = self._routing.route(TaskName.EMBED, job_id, asked, tenant)
        # What stays of "fallbacks" is the route's: its model's own, less those its tenant
        # may not use.
        no_embedding_fallbacks(asked)
        timing.ran(route)
        result = await self._runner.run(route, job, self._config.wait_timeout)
        timing.ran(route, result)
        return embedding_answer(result, body.encoding_format, body.model)
