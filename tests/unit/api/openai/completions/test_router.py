"""``POST /v1/completions`` (api/openai/completions/router.py): run as an ``llm.complete``
job under its Idempotency-Key, answered as a text_completion."""

from __future__ import annotations

import asyncio

import pytest
from fastapi.routing import APIRoute

from api.limits import request_models
from api.observability.server_timing import Timing
from api.openai.chat.serving import OpenAIJobs
from api.openai.completions.router import completions_router
from shared.tenants import Tenant
from tests.unit.api.edge import running_parts

pytestmark = pytest.mark.unit


def test_a_completion_is_an_llm_complete_job_answered_as_a_text_completion() -> None:
    async def main() -> None:
        async with running_parts() as parts:
            parts.answer_every_job(lambda sent: {"content": " world", "finish_reason": "length"})
            models = request_models(parts.config)
            jobs = OpenAIJobs(parts.config, parts.routing, parts.runner)
            (route,) = completions_router(models, jobs, APIRoute).routes  # type: ignore[arg-type]
            assert route.path == "/v1/completions"  # type: ignore[attr-defined]
            assert route.body_field.field_info.annotation is models.openai_completion  # type: ignore[attr-defined]
            body = models.openai_completion(prompt="hello")
            answer = await route.endpoint(body, Tenant("default"), Timing(0.0), idempotency_key="c-1")  # type: ignore[attr-defined]
            assert answer["object"] == "text_completion" and answer["choices"][0]["text"] == " world"
            (sent,) = parts.broker.sent
            assert (sent.name, sent.task_id, sent.job["openai"]["prompt"]) == ("llm.complete", "c-1", "hello")

    asyncio.run(main())
