"""The Responses API's work (api/openai/responses/serving.py): a request made a chat job
and its record, a job read back as a response; conversations, background responses,
cancel and delete. On the real job parts over a fake Redis and broker (tests/unit/api/edge.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from api.errors import BadRequest, BrokerUnavailable, ResponseNotFound
from api.observability.server_timing import Timing
from api.openai.responses.serving import Responses
from api.openai.responses.types import ResponsesRequest
from shared.tenants import Tenant
from tests.unit.api.edge import Parts, running_parts
from tests.unit.api.openai.responses.served import responses_of

pytestmark = pytest.mark.unit

ALPHA = Tenant("alpha")


@asynccontextmanager
async def responses(root: Path) -> AsyncIterator[tuple[Responses, Parts]]:
    async with running_parts() as parts:
        yield responses_of(parts, root), parts


def body(**fields: Any) -> ResponsesRequest:
    return ResponsesRequest.model_validate({"input": "hi", **fields})


def said(sent: Any) -> dict[str, Any]:
    return {"content": f"echo: {sent.job['openai']['messages'][-1]['content']}", "finish_reason": "stop",
            "usage": {"prompt_tokens": 1, "completion_tokens": 2}}  # fmt: skip


def test_a_response_is_answered_whole_and_a_retry_with_its_key_is_the_same_response(tmp_path: Path) -> None:
    async def main() -> None:
        async with responses(tmp_path) as (served, parts):
            parts.answer_every_job(said)
            first = await served.create(ALPHA, body(instructions="be brief"), "key-1", Timing(0.0))
            assert first["status"] == "completed" and first["output"][0]["content"][0]["text"] == "echo: hi"
            assert first["id"].startswith("resp_") and first["usage"]["total_tokens"] == 3
            (sent,) = parts.broker.sent
            assert sent.job["openai"]["messages"] == [{"role": "system", "content": "be brief"},
                                                      {"role": "user", "content": "hi"}]  # fmt: skip
            assert sent.job["response"] is True and sent.job["record"]["id"] == first["id"]
            again = await served.create(ALPHA, body(instructions="be brief"), "key-1", Timing(0.0))
            assert again["id"] == first["id"] and len(parts.broker.sent) == 1

    asyncio.run(main())


def test_a_response_not_stored_leaves_nothing_behind(tmp_path: Path) -> None:
    async def main() -> None:
        async with responses(tmp_path) as (served, parts):
            parts.answer_every_job(said)
            answer = await served.create(ALPHA, body(store=False), None, Timing(0.0))
            assert answer["status"] == "completed"
            with pytest.raises(ResponseNotFound):
                await served.retrieve(f"alpha~{answer['id']}", answer["id"], False, None, Timing(0.0))

    asyncio.run(main())


def test_a_refused_response_leaves_no_record(tmp_path: Path) -> None:
    async def main() -> None:
        async with responses(tmp_path) as (served, parts):
            parts.broker.down = True
            with pytest.raises(BrokerUnavailable):
                await served.create(ALPHA, body(), "key-2", Timing(0.0))
            assert not [key for key in parts.redis.strings if ":response:" in key]

    asyncio.run(main())


def test_a_conversation_goes_on_from_a_finished_response_only(tmp_path: Path) -> None:
    async def main() -> None:
        async with responses(tmp_path) as (served, parts):
            parts.answer_every_job(said)
            first = await served.create(ALPHA, body(), None, Timing(0.0))
            second = await served.create(ALPHA, body(input="and then?", previous_response_id=first["id"]), None,
                                         Timing(0.0))  # fmt: skip
            assert second["status"] == "completed"
            assert parts.broker.sent[1].job["openai"]["messages"] == [
                {"role": "user", "content": "hi"}, {"role": "assistant", "content": "echo: hi"},
                {"role": "user", "content": "and then?"},
            ]  # fmt: skip
            with pytest.raises(ResponseNotFound, match="previous_response_id"):
                await served.create(Tenant("beta"), body(previous_response_id=first["id"]), None, Timing(0.0))
            parts.broker.on_send = None
            waiting = await served.create(ALPHA, body(background=True), None, Timing(0.0))
            with pytest.raises(BadRequest, match="is queued; only a finished one goes on"):
                await served.create(ALPHA, body(previous_response_id=waiting["id"]), None, Timing(0.0))

    asyncio.run(main())


def test_a_background_response_is_queued_polled_cancelled_then_deleted(tmp_path: Path) -> None:
    async def main() -> None:
        async with responses(tmp_path) as (served, parts):
            queued = await served.create(ALPHA, body(background=True), None, Timing(0.0))
            assert queued["status"] == "queued" and queued["background"] is True
            (sent,) = parts.broker.sent
            assert sent.job["stream"] is True and "reply_to" not in sent.job
            key = f"alpha~{queued['id']}"
            assert (await served.retrieve(key, queued["id"], False, None, Timing(0.0)))["status"] == "queued"
            assert (await served.cancel(key, queued["id"]))["status"] == "cancelled"
            assert (await served.cancel(key, queued["id"]))["status"] == "cancelled"
            deleted = await served.delete(key, queued["id"])
            assert deleted == {"id": queued["id"], "object": "response.deleted", "deleted": True}
            with pytest.raises(ResponseNotFound):
                await served.retrieve(key, queued["id"], False, None, Timing(0.0))

    asyncio.run(main())


def test_a_finished_response_cannot_be_cancelled(tmp_path: Path) -> None:
    async def main() -> None:
        async with responses(tmp_path) as (served, parts):
            parts.answer_every_job(said)
            done = await served.create(ALPHA, body(), None, Timing(0.0))
            with pytest.raises(BadRequest, match="is completed: only a queued or running one"):
                await served.cancel(f"alpha~{done['id']}", done["id"])
            retrieved = await served.retrieve(f"alpha~{done['id']}", done["id"], False, None, Timing(0.0))
            assert retrieved["output"] == done["output"] and retrieved["completed_at"] > 0

    asyncio.run(main())


def test_a_responses_input_items_page_newest_first_or_oldest(tmp_path: Path) -> None:
    async def main() -> None:
        async with responses(tmp_path) as (served, parts):
            parts.answer_every_job(said)
            items = [{"role": "user", "content": f"m{n}"} for n in range(3)]
            done = await served.create(ALPHA, body(input=items), None, Timing(0.0))
            key = f"alpha~{done['id']}"
            newest = await served.input_items(key, done["id"], "desc", 2, None)
            assert [i["content"][0]["text"] for i in newest["data"]] == ["m2", "m1"] and newest["has_more"]
            rest = await served.input_items(key, done["id"], "desc", 2, newest["last_id"])
            assert [i["content"][0]["text"] for i in rest["data"]] == ["m0"] and not rest["has_more"]
            oldest = await served.input_items(key, done["id"], "asc", 20, None)
            assert oldest["first_id"] == oldest["data"][0]["id"] and len(oldest["data"]) == 3

    asyncio.run(main())
