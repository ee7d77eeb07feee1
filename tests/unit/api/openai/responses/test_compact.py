"""Compaction (api/openai/responses/compact.py): the conversation summarised by the model
through the queue, returned as one sealed item that stands for it when given back as
input, nothing of it kept. On the real job parts over a fake Redis and broker
(tests/unit/api/edge.py), the model's answers the test's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import ValidationError

from api.errors import InvalidInput, ResponseNotFound, Unavailable
from api.observability.server_timing import Timing
from api.openai.responses.compact import SUMMARY_TOKENS, Compactions, CompactRequest, compact_router
from api.openai.responses.sealing import SUMMARY_PROMPT, CompactionSeal
from api.openai.responses.serving import Responses
from api.openai.responses.types import ResponsesRequest
from shared.tenants import Tenant
from tests.unit.api.edge import Parts, config, running_parts
from tests.unit.api.http.asgi import request
from tests.unit.api.openai.responses.served import responses_of

pytestmark = pytest.mark.unit

ALPHA, BETA = Tenant("alpha"), Tenant("beta")
SECRET = "a-compaction-secret-of-the-unit-tests-0123"


@asynccontextmanager
async def compacting(root: Path, secret: str | None = SECRET) -> AsyncIterator[tuple[Compactions, Responses, Parts]]:
    settings = config(wait_timeout=5, compaction_secret=secret) if secret else config(wait_timeout=5)
    async with running_parts(settings) as parts:
        responses = responses_of(parts, root)
        compactions = Compactions(parts.config, parts.routing, parts.runner, responses, CompactionSeal(parts.config))
        yield compactions, responses, parts


def summarised(sent: Any) -> dict[str, Any]:
    """The model's answer: a summary naming what it was asked last before the question."""
    messages = sent.job["openai"]["messages"]
    if messages[-1]["content"] == SUMMARY_PROMPT:
        return {"content": f"summary of {len(messages) - 1} messages", "finish_reason": "stop", "model": "m-served",
                "usage": {"prompt_tokens": 10, "completion_tokens": 4}}  # fmt: skip
    return {"content": f"echo: {messages[-1]['content']}", "finish_reason": "stop"}


def compact(**fields: Any) -> CompactRequest:
    return CompactRequest.model_validate({"model": "smollm2-135m-instruct", **fields})


def test_a_conversation_is_summarised_by_the_model_and_sealed_for_its_tenant(tmp_path: Path) -> None:
    async def main() -> None:
        async with compacting(tmp_path) as (compactions, _, parts):
            parts.answer_every_job(summarised)
            conversation = [{"role": "user", "content": "My name is Ada."},
                            {"role": "assistant", "content": "Hello, Ada."}]  # fmt: skip
            made = await compactions.compact(ALPHA, compact(input=conversation, instructions="be exact"), Timing(0.0))
            (sent,) = parts.broker.sent
            assert sent.job["openai"]["messages"] == [
                {"role": "system", "content": "be exact"}, {"role": "user", "content": "My name is Ada."},
                {"role": "assistant", "content": "Hello, Ada."}, {"role": "user", "content": SUMMARY_PROMPT},
            ]  # fmt: skip
            meta = sent.job["meta"]
            assert meta["temperature"] == 0.0
            assert meta["tokens_limit"] == min(SUMMARY_TOKENS, parts.config.max_tokens_limit)
            assert made["object"] == "response.compaction" and made["id"] == sent.task_id.partition("~")[2]
            (item,) = made["output"]
            assert item["type"] == "compaction" and item["id"] == f"cmp_{made['id'].removeprefix('resp_')}"
            assert "summary" not in item["encrypted_content"]  # sealed: not readable
            seal = CompactionSeal(parts.config)
            opened = seal.open("alpha", item["encrypted_content"], "input[0]")
            assert (opened.summary, opened.model) == ("summary of 3 messages", "m-served")
            with pytest.raises(InvalidInput, match=r"input\[0\].encrypted_content"):
                seal.open("beta", item["encrypted_content"], "input[0]")
            assert made["usage"]["input_tokens"] == 10 and made["usage"]["output_tokens"] == 4
            # Nothing of it is kept: its summary lives in the sealed item alone.
            kept = [*parts.redis.strings, *parts.redis.hashes, *parts.redis.streams]
            assert not [key for key in kept if made["id"] in key]
            assert not (tmp_path / "responses").exists()

    asyncio.run(main())


def test_the_item_given_back_stands_for_the_conversation_it_compacted(tmp_path: Path) -> None:
    async def main() -> None:
        async with compacting(tmp_path) as (compactions, responses, parts):
            parts.answer_every_job(summarised)
            made = await compactions.compact(ALPHA, compact(input="My name is Ada."), Timing(0.0))
            given = [*made["output"], {"role": "user", "content": "What is my name?"}]
            answer = await responses.create(ALPHA, ResponsesRequest.model_validate({"input": given}), None,
                                            Timing(0.0))  # fmt: skip
            assert answer["status"] == "completed"
            assert parts.broker.sent[-1].job["openai"]["messages"] == [
                {"role": "user", "content": SUMMARY_PROMPT}, {"role": "assistant", "content": "summary of 1 messages"},
                {"role": "user", "content": "What is my name?"},
            ]  # fmt: skip
            # Its input items keep it sealed.
            items = await responses.input_items(f"alpha~{answer['id']}", answer["id"], "asc", 20, None)
            assert items["data"][0]["encrypted_content"] == made["output"][0]["encrypted_content"]
            # Another tenant's use of it is refused as an altered one, before the model is asked.
            with pytest.raises(InvalidInput, match=r"input\[0\].encrypted_content"):
                await responses.create(BETA, ResponsesRequest.model_validate({"input": given}), None, Timing(0.0))
            assert len(parts.broker.sent) == 2

    asyncio.run(main())


def test_a_previous_responses_conversation_comes_before_the_input(tmp_path: Path) -> None:
    async def main() -> None:
        async with compacting(tmp_path) as (compactions, responses, parts):
            parts.answer_every_job(summarised)
            first = await responses.create(ALPHA, ResponsesRequest.model_validate({"input": "hi"}), None, Timing(0.0))
            await compactions.compact(ALPHA, compact(previous_response_id=first["id"], input="bye"), Timing(0.0))
            assert [m["content"] for m in parts.broker.sent[-1].job["openai"]["messages"]] == [
                "hi", "echo: hi", "bye", SUMMARY_PROMPT]  # fmt: skip
            with pytest.raises(ResponseNotFound, match="previous_response_id"):
                await compactions.compact(BETA, compact(previous_response_id=first["id"]), Timing(0.0))

    asyncio.run(main())


def test_what_compaction_refuses_before_the_model_is_asked(tmp_path: Path) -> None:
    async def main() -> None:
        async with compacting(tmp_path, secret=None) as (compactions, _, parts):
            with pytest.raises(Unavailable, match="COMPACTION_SECRET"):
                await compactions.compact(ALPHA, compact(input="hi"), Timing(0.0))
            assert parts.broker.sent == []
        async with compacting(tmp_path) as (compactions, _, parts):
            orphan = [{"type": "function_call_output", "call_id": "call_none", "output": "42"}]
            with pytest.raises(InvalidInput, match=r"input\[0\].call_id: no function call 'call_none'"):
                await compactions.compact(ALPHA, compact(input=orphan), Timing(0.0))
            assert parts.broker.sent == []

    asyncio.run(main())


def test_a_compaction_names_its_model_and_its_conversation() -> None:
    with pytest.raises(ValidationError, match="model"):
        CompactRequest.model_validate({"input": "hi"})
    with pytest.raises(ValidationError, match="input: required, unless previous_response_id"):
        CompactRequest.model_validate({"model": "m"})
    assert compact(input="hi", prompt_cache_key="k", service_tier="auto").given() == "hi"
    assert compact(input=[{"role": "user", "content": "x"}]).given()[0]["content"] == "x"
    with pytest.raises(ValidationError, match="at most 64 fields beyond"):
        compact(input="hi", **{f"extra_{n}": n for n in range(65)})
    schema = CompactRequest.model_json_schema()
    assert {"required": ["previous_response_id"], "properties": {"previous_response_id": {"not": {"type": "null"}}}} \
        in schema["anyOf"]  # fmt: skip


def test_another_method_on_compact_is_a_405_naming_post(tmp_path: Path) -> None:
    async def main() -> None:
        async with compacting(tmp_path) as (compactions, _, _parts):
            app = FastAPI()
            app.include_router(compact_router(compactions, APIRoute))  # type: ignore[arg-type]
            for method in ("GET", "PUT", "DELETE"):
                answer = await request(app, method, "/v1/responses/compact")
                assert (answer.status, answer.headers["allow"]) == (405, "POST"), method

    asyncio.run(main())
