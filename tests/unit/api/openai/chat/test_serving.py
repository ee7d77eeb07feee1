"""Chat completions' work (api/openai/chat/serving.py): a request made an ``llm.chat`` job,
and its result as OpenAI's chat.completion object or its chunks; on the real job parts
over a fake Redis and broker (tests/unit/api/edge.py)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from api.observability.server_timing import Timing
from api.openai.chat.serving import OpenAIJobs, chat_job, whole_answer
from api.openai.chat.types import OpenAIChatRequest
from shared.contract import STREAM_END, STREAM_EXTRA, STREAM_INDEX, STREAM_TEXT, TaskName
from shared.tenants import Tenant
from tests.unit.api.edge import Parts, running_parts

pytestmark = pytest.mark.unit

USER = {"role": "user", "content": "hi"}
CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}


def request(**fields: Any) -> OpenAIChatRequest:
    return OpenAIChatRequest.model_validate({"messages": [USER], **fields})


def test_a_request_is_a_chat_job_its_unknown_fields_passed_on_its_limit_the_completions() -> None:
    job = chat_job(request(model="m", max_tokens=50, max_completion_tokens=20, stop="end", n=2, top_k=5,
                           tools=[{"type": "function", "function": {"name": "f"}}], fallbacks=["b"]))  # fmt: skip
    assert job["meta"]["tokens_limit"] == 20 and job["meta"]["stop_words"] == ["end"]
    assert job["meta"]["sampling"] == {"n": 2} and job["meta"]["model"] == "m"
    assert job["openai"]["messages"] == [USER] and job["openai"]["top_k"] == 5  # vLLM's own, as given
    assert job["openai"]["tools"] == [{"type": "function", "function": {"name": "f"}}]
    assert job["fallbacks"] == ["b"]
    assert "fallbacks" not in chat_job(request())
    assert chat_job(request(disable_fallbacks=True))["fallbacks"] == []


def test_a_result_is_openais_chat_completion_with_its_choices_and_usage() -> None:
    result = {"content": "a", "finish_reason": None, "model": "served", "usage": {"prompt_tokens": 3},
              "choices": [{"index": 0, "content": "a", "finish_reason": None},
                          {"index": 1, "content": None, "finish_reason": None, "tool_calls": [CALL]}]}  # fmt: skip
    answer = whole_answer("chat", "j1", result, "asked")
    assert answer["id"] == "chatcmpl-j1" and answer["object"] == "chat.completion" and answer["model"] == "served"
    first, second = answer["choices"]
    assert first == {"index": 0, "message": {"role": "assistant", "content": "a"}, "finish_reason": "stop",
                     "logprobs": None}  # fmt: skip
    assert second["message"] == {"role": "assistant", "content": None, "tool_calls": [CALL]}
    assert second["finish_reason"] == "tool_calls"
    assert answer["usage"] == {"prompt_tokens": 3, "completion_tokens": 0, "total_tokens": 0}
    # The prompt's cached tokens, where the model server told them (usage and costs count them).
    cached = whole_answer("chat", "j3", {**result, "usage": {"prompt_tokens": 9, "prompt_tokens_details":
                                                              {"cached_tokens": 4, "other": 1}}}, None)  # fmt: skip
    assert cached["usage"]["prompt_tokens_details"] == {"cached_tokens": 4}
    text = whole_answer("completion", "j2", {"content": "b", "finish_reason": "length"}, None)
    assert text["object"] == "text_completion" and text["id"] == "cmpl-j2" and text["model"] == ""
    assert text["choices"] == [{"index": 0, "text": "b", "finish_reason": "length", "logprobs": None}]


def answer_of(parts: Parts, body: OpenAIChatRequest, job_id: str = "j1", resume: str | None = None) -> Any:
    jobs = OpenAIJobs(parts.config, parts.routing, parts.runner)
    return jobs.answer(Tenant("default"), TaskName.CHAT, job_id, chat_job(body), body, resume, Timing(0.0))


def test_a_chat_is_run_once_and_answered_whole() -> None:
    async def main() -> None:
        async with running_parts() as parts:
            parts.answer_every_job(lambda sent: {"content": "echo: hi", "finish_reason": "stop"})
            answer = await answer_of(parts, request(model="fake"))
            assert answer["choices"][0]["message"]["content"] == "echo: hi" and answer["model"] == "fake"
            (sent,) = parts.broker.sent
            assert sent.name == "llm.chat" and sent.job["openai"]["messages"] == [USER]

    asyncio.run(main())


def stream_answer(parts: Parts, key: str) -> None:
    stream = parts.config.keys.stream(key)
    parts.redis.xadd_now(stream, {STREAM_INDEX: 0, STREAM_TEXT: "he"})
    parts.redis.xadd_now(stream, {STREAM_INDEX: 0, STREAM_TEXT: "llo"})
    parts.redis.xadd_now(stream, {STREAM_INDEX: 0, STREAM_TEXT: "", STREAM_EXTRA: json.dumps({"tool_calls": [CALL]})})
    end = {"content": "hello", "finish_reason": None, "model": "served", "usage": {"prompt_tokens": 1,
           "completion_tokens": 2, "total_tokens": 3}, "choices": [{"index": 0, "content": "hello",
           "finish_reason": None, "tool_calls": [CALL]}]}  # fmt: skip
    parts.redis.xadd_now(stream, {STREAM_END: json.dumps(end)})


def chunks(sent: list[str]) -> list[Any]:
    return [json.loads(event.split("data: ", 1)[1]) if "[DONE]" not in event else "[DONE]" for event in sent]


def test_a_streamed_chat_is_openais_chunks_the_role_once_then_the_finish_usage_and_done() -> None:
    async def main() -> None:
        async with running_parts() as parts:
            body = request(stream=True, stream_options={"include_usage": True})
            response = await answer_of(parts, body)
            stream_answer(parts, "j1")
            got = chunks([part async for part in response.body_iterator])
            assert [c["choices"][0]["delta"] for c in got[:3]] == [
                {"role": "assistant", "content": "he"}, {"content": "llo"}, {"tool_calls": [CALL]}
            ]  # fmt: skip
            assert got[3]["choices"] == [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]
            assert got[3]["model"] == "served" and got[0]["model"] == ""
            assert got[4]["choices"] == [] and got[4]["usage"]["total_tokens"] == 3 and got[5] == "[DONE]"
            assert {c["id"] for c in got[:5]} == {"chatcmpl-j1"} and len({c["created"] for c in got[:5]}) == 1
            assert all(c["object"] == "chat.completion.chunk" for c in got[:5])

    asyncio.run(main())


def test_a_client_coming_back_gets_the_chunks_after_the_last_it_had_the_same_as_before() -> None:
    async def main() -> None:
        async with running_parts() as parts:
            body = request(stream=True)
            first = await answer_of(parts, body)
            stream_answer(parts, "j1")
            whole = [part async for part in first.body_iterator]
            again = await answer_of(parts, body, resume="1")
            assert [part async for part in again.body_iterator] == whole[2:]
            assert len(parts.broker.sent) == 1

    asyncio.run(main())


def test_a_reasoning_servers_reasoning_reaches_openais_clients_as_vllm_names_it() -> None:
    result = {"content": "42", "finish_reason": "stop", "choices": [{"index": 0, "content": "42",
              "finish_reason": "stop", "reasoning_content": "six times seven"}]}  # fmt: skip
    message = whole_answer("chat", "j1", result, "m")["choices"][0]["message"]
    assert message == {"role": "assistant", "content": "42", "reasoning_content": "six times seven"}

    async def main() -> None:
        async with running_parts() as parts:
            response = await answer_of(parts, request(stream=True))
            stream = parts.config.keys.stream("j1")
            extra = json.dumps({"reasoning_content": "six"})
            parts.redis.xadd_now(stream, {STREAM_INDEX: 0, STREAM_TEXT: "", STREAM_EXTRA: extra})
            parts.redis.xadd_now(stream, {STREAM_END: json.dumps(result)})
            got = chunks([part async for part in response.body_iterator])
            # A reasoning piece is a delta of its own, never an empty one.
            assert got[0]["choices"][0]["delta"] == {"role": "assistant", "reasoning_content": "six"}

    asyncio.run(main())
