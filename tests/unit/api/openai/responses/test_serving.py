"""The Responses API's work (api/openai/responses/serving.py): a request made a chat job
and its record, a job read back as a response; conversations, background responses,
cancel and delete. On the real job parts over a fake Redis and broker (tests/unit/api/edge.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from api.errors import BadRequest, BrokerUnavailable, ConversationNotFound, InvalidInput, ResponseNotFound
from api.observability.server_timing import Timing
from api.openai.conversations.serving import Conversations
from api.openai.conversations.types import ConversationCreate
from api.openai.responses.sealing import CompactionSeal
from api.openai.responses.serving import Responses
from api.openai.responses.types import ResponsesRequest
from shared.storage.conversation_files import ConversationFiles
from shared.storage.file_store import FileStore
from shared.storage.response_files import KeptResponses
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


def test_a_conversations_items_come_before_the_input_and_may_stand_for_it(tmp_path: Path) -> None:
    async def main() -> None:
        async with responses(tmp_path) as (served, parts):
            parts.answer_every_job(said)
            files = ConversationFiles(FileStore(str(tmp_path)))
            conversations = Conversations(files, CompactionSeal(parts.config))
            made = await conversations.create("alpha", ConversationCreate.model_validate(
                {"items": [{"role": "user", "content": "My name is Ada."}]}))  # fmt: skip
            cid = made["id"]
            answer = await served.create(ALPHA, body(input="What is my name?", conversation=cid), None, Timing(0.0))
            assert answer["conversation"] == {"id": cid}
            assert parts.broker.sent[0].job["openai"]["messages"] == [
                {"role": "user", "content": "My name is Ada."},
                {"role": "user", "content": "What is my name?"},
            ]
            # Its worker adds the turn as it ends (tasks/response_outcomes.py): the record names the conversation.
            assert parts.broker.sent[0].job["record"]["conversation"] == cid
            # Its input alone is the response's: the conversation's items are not its input items.
            items = await served.input_items(f"alpha~{answer['id']}", answer["id"], "asc", 20, None)
            assert [i["content"][0]["text"] for i in items["data"]] == ["What is my name?"]
            # A conversation holding items stands for the input.
            await served.create(ALPHA, ResponsesRequest.model_validate({"conversation": {"id": cid}}), None,
                                Timing(0.0))  # fmt: skip
            assert parts.broker.sent[1].job["openai"]["messages"] == [{"role": "user", "content": "My name is Ada."}]

    asyncio.run(main())


def test_a_response_of_an_empty_or_unknown_conversation_is_refused_before_it_is_queued(tmp_path: Path) -> None:
    async def main() -> None:
        async with responses(tmp_path) as (served, parts):
            conversations = Conversations(ConversationFiles(FileStore(str(tmp_path))), CompactionSeal(parts.config))
            empty = (await conversations.create("alpha", ConversationCreate.model_validate({})))["id"]
            asked = ResponsesRequest.model_validate({"conversation": empty})
            with pytest.raises(InvalidInput, match=f"input: required: conversation '{empty}' holds no items yet"):
                await served.create(ALPHA, asked, None, Timing(0.0))
            with pytest.raises(ConversationNotFound, match="conversation: no conversation"):
                await served.create(Tenant("beta"), body(conversation=empty), None, Timing(0.0))
            with pytest.raises(ConversationNotFound, match="conversation: no conversation"):
                await served.create(ALPHA, body(conversation="conv_unknown"), None, Timing(0.0))
            assert parts.broker.sent == []

    asyncio.run(main())


def test_a_finished_stored_response_is_answered_from_the_file_store_once_redis_lost_it(tmp_path: Path) -> None:
    async def main() -> None:
        async with responses(tmp_path) as (served, parts):
            parts.answer_every_job(said)
            done = await served.create(ALPHA, body(), None, Timing(0.0))
            # The worker that ran it kept its outcome (tasks/response_outcomes.py).
            kept = KeptResponses(FileStore(str(tmp_path)), 3600)
            answer = {"content": "echo: hi", "finish_reason": "stop", "usage": {"prompt_tokens": 1,
                      "completion_tokens": 2}}  # fmt: skip
            kept.save_outcome("alpha", done["id"], {"status": "succeeded", "result": answer,
                                                    "finished_at": "2030-01-01T00:00:00+00:00"})  # fmt: skip
            for store in (parts.redis.strings, parts.redis.hashes, parts.redis.zsets, parts.redis.streams):
                store.clear()  # Redis came back empty
            key = f"alpha~{done['id']}"
            found = await served.retrieve(key, done["id"], False, None, Timing(0.0))
            assert found["status"] == "completed" and found["output"] == done["output"]
            assert found["completed_at"] == 1893456000
            # Its stream is Redis's alone: its answer in one piece.
            streamed = await served.retrieve(key, done["id"], True, None, Timing(0.0))
            events = [json.loads(part.split("data: ", 1)[1]) for part in [p async for p in streamed.body_iterator]]
            deltas = [event["delta"] for event in events if event["type"] == "response.output_text.delta"]
            assert deltas == ["echo: hi"] and events[-1]["type"] == "response.completed"
            assert events[-1]["response"]["output"] == done["output"]
            # It goes on as before.
            await served.create(ALPHA, body(input="more", previous_response_id=done["id"]), None, Timing(0.0))
            assert [m["content"] for m in parts.broker.sent[-1].job["openai"]["messages"]] == [
                "hi", "echo: hi", "more"]  # fmt: skip
            await served.delete(key, done["id"])
            assert kept.record("alpha", done["id"]) is None and kept.outcome("alpha", done["id"]) is None

    asyncio.run(main())


def test_a_queued_response_whose_claim_redis_lost_is_queued_still(tmp_path: Path) -> None:
    async def main() -> None:
        async with responses(tmp_path) as (served, parts):
            queued = await served.create(ALPHA, body(background=True), None, Timing(0.0))
            for store in (parts.redis.strings, parts.redis.hashes, parts.redis.zsets):
                store.clear()
            key = f"alpha~{queued['id']}"
            assert (await served.retrieve(key, queued["id"], False, None, Timing(0.0)))["status"] == "queued"
            with pytest.raises(BadRequest, match="is queued"):
                await served.create(ALPHA, body(previous_response_id=queued["id"]), None, Timing(0.0))

    asyncio.run(main())
