"""The spec's endpoints' work (api/native/serving.py): a body made a job, routed once,
and answered whole, as the spec's events, or accepted without waiting; on the real job
parts over a fake Redis and broker (tests/unit/api/edge.py)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from fastapi.responses import JSONResponse, StreamingResponse

from api.errors import JobTimedOut, QueueNotFound
from api.native.serving import SpecJobs
from api.native.types import ChatCompletionRequest, CompletionResponse, GenerateRequest
from api.observability.server_timing import Timing
from shared.contract import STREAM_END, STREAM_INDEX, STREAM_TEXT, TaskName
from shared.tenants import Tenant
from tests.unit.api.edge import Parts, config, running_parts

pytestmark = pytest.mark.unit

MODELS = json.dumps({"models": [{"name": "small", "url": "http://a:1", "served_name": "Qwen/Qwen2.5-1.5B"},
                                {"name": "large", "url": "http://b:1", "queue": "llm-large"}]})  # fmt: skip
TENANT = Tenant("default")


def echo(sent: Any) -> dict[str, Any]:
    return {"content": f"echo: {sent.job.get('content') or sent.job['messages'][-1]['content']}",
            "finish_reason": "stop", "timing": {"queued_seconds": 0.0, "model_seconds": 0.0}}  # fmt: skip


def spec(parts: Parts) -> SpecJobs:
    return SpecJobs(parts.config, parts.routing, parts.runner)


def test_a_generate_request_is_answered_with_its_content_and_its_timing_told() -> None:
    async def main() -> None:
        async with running_parts(config(models=MODELS, queue_name="q")) as parts:
            parts.answer_every_job(echo)
            timing = Timing(0.0)
            body = GenerateRequest(job_id="g1", content="hi", meta={"model": "small"})
            answer = await spec(parts).answer(TENANT, TaskName.GENERATE, body, None, None, None, None, timing=timing)
            assert answer == CompletionResponse(content="echo: hi", job_id="g1")
            (sent,) = parts.broker.sent
            # As its model's server knows it, on its model's queue; the request's own fields left out.
            assert sent.job["meta"]["model"] == "Qwen/Qwen2.5-1.5B" and sent.queue == "q.small"
            assert not {"job_id", "stream", "priority", "source"} & set(sent.job)
            assert timing.job == {"job_id": "g1", "model": "small", "queue": "q.small", "tenant": "default"}
            assert timing.model == "small"

    asyncio.run(main())


def test_a_priority_where_protollms_clients_put_it_is_the_jobs_unless_meta_names_one() -> None:
    async def main() -> None:
        async with running_parts() as parts:
            parts.answer_every_job(echo)
            top = GenerateRequest(job_id="p1", content="x", priority=9)
            await spec(parts).answer(TENANT, TaskName.GENERATE, top, None, None, None, None)
            both = GenerateRequest(job_id="p2", content="x", priority=9, meta={"priority": 1})
            await spec(parts).answer(TENANT, TaskName.GENERATE, both, None, None, None, None)
            assert [sent.job["meta"]["priority"] for sent in parts.broker.sent] == [9, 1]

    asyncio.run(main())


@pytest.mark.parametrize(("wait", "prefer"), [(0.0, None), (None, "respond-async"), (30.0, "Respond-Async, x")])
def test_a_request_that_does_not_wait_is_accepted_with_where_to_find_its_answer(
    wait: float | None, prefer: str | None
) -> None:
    async def main() -> None:
        settings = config(public_base_url="https://llm.example.com")
        async with running_parts(settings) as parts:
            body = ChatCompletionRequest(job_id="c1", messages=[{"role": "user", "content": "hi"}])
            answer = await spec(parts).answer(TENANT, TaskName.CHAT, body, wait, prefer, None, None)
            assert isinstance(answer, JSONResponse) and answer.status_code == 202
            assert answer.headers["location"] == "https://llm.example.com/jobs/c1"
            assert json.loads(answer.body) == {"job_id": "c1", "tenant": "default", "status": "queued",
                                               "status_url": "https://llm.example.com/jobs/c1"}  # fmt: skip
            (sent,) = parts.broker.sent
            assert sent.name == "llm.chat" and "reply_to" not in sent.job  # nobody awaits it here

    asyncio.run(main())


def test_a_wait_longer_than_the_deployments_is_cut_to_it() -> None:
    async def main() -> None:
        async with running_parts(config(wait_timeout=0.05)) as parts:
            body = GenerateRequest(job_id="w1", content="x")
            with pytest.raises(JobTimedOut, match=r"did not finish within 0.05s"):
                await asyncio.wait_for(spec(parts).answer(TENANT, TaskName.GENERATE, body, 3600.0, None, None, None), 5)

    asyncio.run(main())


def test_a_queue_name_picks_the_model_served_from_it() -> None:
    async def main() -> None:
        async with running_parts(config(models=MODELS, queue_name="q")) as parts:
            parts.answer_every_job(echo)
            body = GenerateRequest(job_id="q1", content="x")
            await spec(parts).answer(TENANT, TaskName.GENERATE, body, None, None, None, "llm-large")
            assert parts.broker.sent[0].queue == "llm-large"
            with pytest.raises(QueueNotFound):
                await spec(parts).answer(TENANT, TaskName.GENERATE, body, None, None, None, "no-such-queue")

    asyncio.run(main())


def test_a_streamed_answer_is_the_specs_events_each_piece_then_done() -> None:
    async def main() -> None:
        async with running_parts() as parts:
            body = GenerateRequest(job_id="s1", content="hi")
            answer = await spec(parts).answer(TENANT, TaskName.GENERATE, body, None, None, "text/event-stream", None)
            assert isinstance(answer, StreamingResponse)
            stream = parts.config.keys.stream("s1")
            for text in ("echo", ": hi"):
                parts.redis.xadd_now(stream, {STREAM_INDEX: 0, STREAM_TEXT: text})
            parts.redis.xadd_now(stream, {STREAM_INDEX: 1, STREAM_TEXT: "a second choice is not the spec's"})
            parts.redis.xadd_now(stream, {STREAM_END: json.dumps({"content": "echo: hi", "finish_reason": "stop"})})
            sent = [part async for part in answer.body_iterator]
            assert sent == [
                'id: 0\ndata: {"job_id":"s1","content":"echo"}\n\n',
                'id: 1\ndata: {"job_id":"s1","content":": hi"}\n\n',
                'id: 2\nevent: done\ndata: {"job_id":"s1","content":"echo: hi","finish_reason":"stop"}\n\n',
            ]

    asyncio.run(main())
