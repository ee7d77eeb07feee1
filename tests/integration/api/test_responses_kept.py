"""What /v1/responses and /v1/conversations keep outside Redis: conversations until
deleted, stored responses for RESPONSE_TTL, both found when Redis came back empty
(every key of the stack's own prefix deleted: the machine's other keys untouched); a
response older than RESPONSE_TTL is 404 and its files removed."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest

from shared.storage import redis_clients
from testing.fake_model_server import FakeModelServer
from testing.load import wait_until
from testing.openai_sdk import client
from tests.conftest import Stack, StackFactory

pytestmark = pytest.mark.integration


def empty_redis(stack: Stack) -> None:
    """Redis as it comes back after a restart without its data, for this stack: every
    key of its own prefix deleted (and nothing else of the machine's Redis)."""
    config = stack.config
    redis = redis_clients.sync_client(config)
    try:
        pattern = f"{config.redis_prefix}:*"
        for key in list(redis.scan_iter(match=pattern, count=1000)):
            redis.delete(key)
        assert list(redis.scan_iter(match=pattern, count=1000)) == []
    finally:
        redis.close()


def test_conversations_and_stored_responses_outlive_redis_coming_back_empty(
    make_stack: StackFactory, fake: FakeModelServer, broker_env: dict[str, str]
) -> None:
    stack = make_stack(workers=0)
    worker = stack.processes.worker(stack.env)
    sdk = client(stack)
    conversation = sdk.conversations.create(items=[{"role": "user", "content": "hi"}], metadata={"k": "v"})
    in_conversation = sdk.responses.create(model="fake-model", input="one", conversation=conversation.id)
    plain = sdk.responses.create(model="fake-model", input="plain", metadata={"m": "1"})
    background = sdk.responses.create(model="fake-model", input="later", background=True)
    wait_until(lambda: sdk.responses.retrieve(background.id).status == "completed", 30, "the background response")
    before = {made.id: sdk.responses.retrieve(made.id) for made in (in_conversation, plain, background)}
    items_before = sdk.conversations.items.list(conversation.id, order="asc")
    queued = None
    if broker_env["RABBIT_MQ_HOST"]:  # a queued job survives in RabbitMQ (a Redis broker lost it too)
        worker.stop()
        queued = sdk.responses.create(model="fake-model", input="queued", background=True)
    empty_redis(stack)
    # Each response as it was, its input items, and a turn continuing one of them.
    for response_id, was in before.items():
        assert sdk.responses.retrieve(response_id).model_dump(exclude={"completed_at"}) == was.model_dump(
            exclude={"completed_at"}
        )
    assert [i.content[0].text for i in sdk.responses.input_items.list(plain.id).data] == ["plain"]  # type: ignore[union-attr]
    # Its stream, read again: its answer in one piece, as OpenAI's events.
    events = list(sdk.responses.retrieve(background.id, stream=True))
    assert events[-1].type == "response.completed" and events[-1].response.output_text == "echo: later"
    if queued is not None:
        # Queued before Redis emptied: still queued (its job on the broker), then answered.
        assert sdk.responses.retrieve(queued.id).status == "queued"
        stack.processes.worker(stack.env)
        wait_until(lambda: sdk.responses.retrieve(queued.id).status == "completed", 30, "the queued response")
        assert sdk.responses.retrieve(queued.id).output_text == "echo: queued"
    else:
        stack.processes.worker(stack.env)
    after = sdk.responses.create(model="fake-model", input="next", previous_response_id=plain.id)
    assert after.output_text == "echo: next"
    assert fake.completions[-1]["messages"] == [
        {"role": "user", "content": "plain"},
        {"role": "assistant", "content": "echo: plain"},
        {"role": "user", "content": "next"},
    ]
    # The conversation, its items, and its next turn asked after all of them.
    assert sdk.conversations.retrieve(conversation.id).metadata == {"k": "v"}
    assert sdk.conversations.items.list(conversation.id, order="asc").data == items_before.data
    sdk.responses.create(model="fake-model", input="two", conversation=conversation.id)
    assert [m["content"] for m in fake.completions[-1]["messages"]] == ["hi", "one", "echo: one", "two"]
    # Deleted: gone from the file store too.
    sdk.responses.delete(plain.id)
    empty_redis(stack)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(plain.id)


def test_a_response_past_response_ttl_is_404_and_its_files_removed(
    make_stack: StackFactory, fake: FakeModelServer
) -> None:
    stack = make_stack(RESPONSE_TTL="3", RESPONSE_SWEEP_SECONDS="0.3")
    sdk = client(stack)
    folder = Path(stack.env["FILE_STORE_URL"]) / "responses" / "default"
    conversation = sdk.conversations.create()
    made = sdk.responses.create(model="fake-model", input="soon gone", conversation=conversation.id)
    background = sdk.responses.create(model="fake-model", input="soon gone too", background=True)
    wait_until(lambda: sdk.responses.retrieve(background.id).status == "completed", 30, "the background response")
    assert sorted(p.name for p in folder.iterdir()) == sorted([made.id, background.id])
    # Past RESPONSE_TTL, the sweep removes them, no one reading them.
    wait_until(lambda: not any(folder.iterdir()), 20, "the sweep to remove the expired responses")
    unknown = httpx.get(f"{stack.url}/v1/responses/resp_000none", timeout=30)
    for response_id in (made.id, background.id):
        gone = httpx.get(f"{stack.url}/v1/responses/{response_id}", timeout=30)
        assert gone.status_code == 404 and gone.text.replace(response_id, "x") == unknown.text.replace(
            "resp_000none", "x"
        )
        assert httpx.get(f"{stack.url}/v1/responses/{response_id}/input_items", timeout=30).status_code == 404
    with pytest.raises(openai.NotFoundError):
        sdk.responses.create(model="fake-model", input="x", previous_response_id=made.id)
    # The conversation is not a result: it stays, with the turn.
    assert [i.type for i in sdk.conversations.items.list(conversation.id)] == ["message", "message"]
