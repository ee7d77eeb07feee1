"""The Messages API's work (api/anthropic/messages/serving.py): a message made the
``llm.chat`` job chat completions queue, answered whole or as Anthropic's events (a
client coming back reads on after the last it had), and a prompt's tokens counted by
its model's server. On the real job parts over a fake Redis and broker
(tests/unit/api/edge.py); the model server a function (httpx.MockTransport)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from api.anthropic.messages.serving import Messages
from api.anthropic.messages.types import CountTokensRequest, MessagesRequest
from api.errors import LimitExceeded, ModelNotFound
from api.observability.server_timing import Timing
from api.openai.responses.input_tokens import TokenCounter
from shared.contract import STREAM_END, STREAM_INDEX, STREAM_TEXT
from shared.registry import load_registry
from shared.tenants import Tenant
from tests.unit.api.edge import Parts, config, running_parts

pytestmark = pytest.mark.unit

ALPHA = Tenant("alpha")
TOKENIZED: list[dict[str, Any]] = []


def tokenizer(request: httpx.Request) -> httpx.Response:
    """vLLM's /tokenize: 3 tokens a message."""
    asked = json.loads(request.content)
    TOKENIZED.append(asked)
    return httpx.Response(200, json={"count": 3 * len(asked["messages"]), "max_model_len": 4096, "tokens": []})


@asynccontextmanager
async def messages(**settings: Any) -> AsyncIterator[tuple[Messages, Parts]]:
    async with running_parts(config(wait_timeout=5, **settings)) as parts:
        counter = TokenCounter(parts.config, httpx.AsyncClient(transport=httpx.MockTransport(tokenizer)))
        yield Messages(parts.config, parts.routing, parts.runner, load_registry(parts.config), counter), parts


def body(**fields: Any) -> MessagesRequest:
    return MessagesRequest.model_validate(
        {"model": "m", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}], **fields}
    )


def test_a_message_is_one_chat_job_under_its_key_answered_as_anthropics_message() -> None:
    async def main() -> None:
        async with messages() as (served, parts):
            parts.answer_every_job(
                lambda sent: {
                    "content": "echo: hi",
                    "finish_reason": "stop",
                    "usage": {"prompt_tokens": 5, "completion_tokens": 2},
                }
            )
            answer = await served.create(ALPHA, body(system="Be brief."), "key-1", None, Timing(0.0))
            assert answer["id"] == "msg_key-1" and answer["content"] == [{"type": "text", "text": "echo: hi"}]
            assert answer["usage"]["input_tokens"] == 5 and answer["stop_reason"] == "end_turn"
            (sent,) = parts.broker.sent
            assert sent.name == "llm.chat" and sent.task_id == "alpha~key-1" and sent.job["tenant"] == "alpha"
            assert sent.job["openai"]["messages"] == [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "hi"},
            ]
            assert sent.job["meta"]["tokens_limit"] == 20

    asyncio.run(main())


def test_max_tokens_and_stop_sequences_over_the_deployments_limits_are_refused_before_anything_is_queued() -> None:
    async def main() -> None:
        async with messages(max_tokens_limit=10, max_stop_words=2, max_stop_word_chars=4) as (served, parts):
            with pytest.raises(LimitExceeded, match=r"^max_tokens: 20; at most 10"):
                await served.create(ALPHA, body(), None, None, Timing(0.0))
            with pytest.raises(LimitExceeded, match=r"^stop_sequences: 3; at most 2 \(MAX_STOP_WORDS\)"):
                await served.create(ALPHA, body(max_tokens=5, stop_sequences=["a", "b", "c"]), None, None, Timing(0.0))
            with pytest.raises(LimitExceeded, match=r"^stop_sequences: one of 5 characters; at most 4"):
                await served.create(ALPHA, body(max_tokens=5, stop_sequences=["abcde"]), None, None, Timing(0.0))
            assert parts.broker.sent == []

    asyncio.run(main())


def stream_answer(parts: Parts, key: str) -> None:
    stream = parts.config.keys.stream(key)
    for text in ("ec", "ho"):
        parts.redis.xadd_now(stream, {STREAM_INDEX: 0, STREAM_TEXT: text})
    end = {
        "content": "echo",
        "finish_reason": "stop",
        "usage": {"prompt_tokens": 1, "completion_tokens": 2},
        "choices": [{"index": 0, "content": "echo", "finish_reason": "stop"}],
    }
    parts.redis.xadd_now(stream, {STREAM_END: json.dumps(end)})


def test_a_streamed_message_is_anthropics_events_and_a_returning_client_reads_on() -> None:
    async def main() -> None:
        async with messages() as (served, parts):
            first = await served.create(ALPHA, body(stream=True), "s1", None, Timing(0.0))
            stream_answer(parts, "alpha~s1")
            whole = [part async for part in first.body_iterator]  # type: ignore[union-attr]
            names = [part.split("\n")[1] for part in whole]
            assert names == [
                "event: message_start",
                "event: ping",
                "event: content_block_start",
                "event: content_block_delta",
                "event: content_block_delta",
                "event: content_block_stop",
                "event: message_delta",
                "event: message_stop",
            ]
            assert whole[0].startswith("id: 0\n") and whole[-1].startswith("id: 7\n")
            again = await served.create(ALPHA, body(stream=True), "s1", "3", Timing(0.0))
            assert [part async for part in again.body_iterator] == whole[4:]  # type: ignore[union-attr]
            assert len(parts.broker.sent) == 1

    asyncio.run(main())


def test_a_prompts_tokens_are_counted_by_its_models_server_without_queuing_anything() -> None:
    async def main() -> None:
        TOKENIZED.clear()
        async with messages() as (served, parts):
            asked = CountTokensRequest.model_validate(
                {
                    "model": "m",
                    "system": "s",
                    "messages": [{"role": "user", "content": "hi"}],
                    "tools": [{"name": "f", "input_schema": {"type": "object"}}],
                }
            )
            assert await served.count_tokens(ALPHA, asked) == {"input_tokens": 6}
            (tokenized,) = TOKENIZED
            assert tokenized["model"] == "m" and len(tokenized["messages"]) == 2 and tokenized["tools"]
            assert parts.broker.sent == []

    asyncio.run(main())


def test_a_model_the_registry_does_not_list_is_not_found_for_either() -> None:
    registry = json.dumps({"models": [{"name": "small", "url": "http://127.0.0.1:9"}]})

    async def main() -> None:
        async with messages(models=registry) as (served, parts):
            with pytest.raises(ModelNotFound, match="'m' is not served here"):
                await served.create(ALPHA, body(), None, None, Timing(0.0))
            with pytest.raises(ModelNotFound):
                await served.count_tokens(
                    ALPHA,
                    CountTokensRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": "x"}]}),
                )
            assert parts.broker.sent == []

    asyncio.run(main())


def test_a_model_whose_server_serves_messages_gets_the_request_as_given_beside_its_translation() -> None:
    registry = json.dumps({"models": [{"name": "native", "url": "http://127.0.0.1:9", "messages_api": True},
                                      {"name": "m", "url": "http://127.0.0.1:9"}]})  # fmt: skip

    async def main() -> None:
        async with messages(models=registry) as (served, parts):
            parts.answer_every_job(lambda sent: {"content": "ok", "finish_reason": "stop"})
            await served.create(ALPHA, body(model="native", system="s", temperature=0.5), None, None, Timing(0.0))
            await served.create(ALPHA, body(), None, None, Timing(0.0))
            native, translated = parts.broker.sent
            assert native.job["anthropic"] == {"messages": [{"role": "user", "content": "hi"}], "system": "s",
                                               "max_tokens": 20, "temperature": 0.5}  # fmt: skip
            assert native.job["openai"]["messages"][0] == {"role": "system", "content": "s"}  # for a fallback's
            assert "anthropic" not in translated.job

    asyncio.run(main())
