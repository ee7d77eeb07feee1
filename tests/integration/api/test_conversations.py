"""OpenAI's Conversations API as the official SDK (strict validation) calls it, and
responses in a conversation: its items the context of each turn, each turn's items
added to it as the response ends (waited for, streamed, or in the background), none
lost when two end at once."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import openai
import pytest

from testing.fake_model_server import FakeModelServer
from testing.load import wait_until
from testing.openai_sdk import client
from tests.conftest import Stack, StackFactory
from tests.integration.test_isolation import auth, walled_stack
from tests.integration.test_isolation import sdk as sdk_of

pytestmark = pytest.mark.integration


def texts(items: list[object]) -> list[tuple[str, str]]:
    """Each message item as (role, its text)."""
    return [(i.role, "".join(p.text for p in i.content)) for i in items if i.type == "message"]  # type: ignore[attr-defined]


def test_a_conversation_and_its_items_through_the_sdk(stack_once: Stack) -> None:
    sdk = client(stack_once)
    made = sdk.conversations.create(
        items=[
            {"type": "message", "role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "input_text", "text": "hello"}]},
        ],
        metadata={"topic": "demo"},
    )
    assert made.object == "conversation" and made.id.startswith("conv_") and made.metadata == {"topic": "demo"}
    assert sdk.conversations.retrieve(made.id) == made
    updated = sdk.conversations.update(made.id, metadata={"topic": "other", "k": "v"})
    assert updated.metadata == {"topic": "other", "k": "v"} and updated.created_at == made.created_at
    assert sdk.conversations.retrieve(made.id).metadata == {"topic": "other", "k": "v"}
    added = sdk.conversations.items.create(
        made.id,
        items=[
            {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city": "Oslo"}'},
            {"type": "function_call_output", "call_id": "call_1", "output": "rain"},
            {"role": "assistant", "content": "It rains."},
        ],
        include=["message.output_text.logprobs"],
    )
    assert added.object == "list" and [i.type for i in added.data] == ["function_call", "function_call_output",
                                                                      "message"]  # fmt: skip
    assert added.first_id == added.data[0].id and added.last_id == added.data[-1].id and not added.has_more
    # Newest first by default; pages of two, followed by the SDK's own paging.
    first = sdk.conversations.items.list(made.id, limit=2)
    assert [i.id for i in first.data] == [added.data[2].id, added.data[1].id] and first.has_more
    every = [i.id for i in sdk.conversations.items.list(made.id, limit=2)]
    assert len(every) == 5 and every[:3] == [i.id for i in reversed(added.data)]
    oldest = sdk.conversations.items.list(made.id, order="asc", limit=100)
    assert [i.id for i in oldest.data] == list(reversed(every)) and not oldest.has_more
    assert texts(oldest.data) == [("developer", "Be brief."), ("user", "hello"), ("assistant", "It rains.")]
    after = sdk.conversations.items.list(made.id, order="asc", after=oldest.data[1].id, limit=2)
    assert [i.id for i in after.data] == [i.id for i in oldest.data[2:4]] and after.has_more
    call = sdk.conversations.items.retrieve(added.data[0].id, conversation_id=made.id, include=["x"])
    assert call.type == "function_call" and call.name == "get_weather" and call.status == "completed"  # type: ignore[union-attr]
    # An item deleted: the conversation is answered; the item is gone.
    left = sdk.conversations.items.delete(added.data[0].id, conversation_id=made.id)
    assert left.id == made.id and left.object == "conversation"
    with pytest.raises(openai.NotFoundError):
        sdk.conversations.items.retrieve(added.data[0].id, conversation_id=made.id)
    assert len(sdk.conversations.items.list(made.id).data) == 4
    # Deleted: gone, with its items.
    deleted = sdk.conversations.delete(made.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (made.id, "conversation.deleted", True)
    for call_it in (lambda: sdk.conversations.retrieve(made.id), lambda: sdk.conversations.items.list(made.id),
                    lambda: sdk.conversations.delete(made.id)):  # fmt: skip
        with pytest.raises(openai.NotFoundError):
            call_it()
    empty = sdk.conversations.create()
    assert empty.metadata == {} and sdk.conversations.items.list(empty.id).data == []


def test_each_turn_sees_the_conversation_so_far_and_is_added_to_it(stack_once: Stack, fake: FakeModelServer) -> None:
    sdk = client(stack_once)
    conversation = sdk.conversations.create(items=[{"role": "user", "content": "my name is Ada"}])
    turns = [
        ("one", {"conversation": conversation.id}),
        ("two", {"conversation": {"id": conversation.id}, "instructions": "Be brief."}),
        ("three", {"conversation": conversation.id, "stream": True}),
        ("four", {"conversation": conversation.id, "background": True}),
    ]
    said: list[tuple[str, str]] = [("user", "my name is Ada")]
    for text, options in turns:
        made = sdk.responses.create(model="fake-model", input=text, **options)  # type: ignore[call-overload]
        if options.get("stream"):
            made = next(event for event in made if event.type == "response.completed").response
        if options.get("background"):
            assert made.status == "queued"
            wait_until(lambda queued=made.id: sdk.responses.retrieve(queued).status == "completed", 30,
                       "the background turn")  # fmt: skip
            made = sdk.responses.retrieve(made.id)
        assert made.conversation is not None and made.conversation.id == conversation.id
        assert made.output_text == f"echo: {text}"
        # What the model was asked: the conversation so far, then this turn's input.
        asked = fake.completions[-1]["messages"]
        system = [{"role": "system", "content": "Be brief."}] if "instructions" in options else []
        assert asked == [*system, *({"role": r, "content": t} for r, t in said), {"role": "user", "content": text}]
        said += [("user", text), ("assistant", f"echo: {text}")]
        # The turn is in the conversation once the response is seen ended: its input,
        # then its output, the output's items as the response showed them.
        items = list(sdk.conversations.items.list(conversation.id, order="asc", limit=100))
        assert texts(items) == said
        assert items[-1].id == made.output[0].id
    # The first turn's response still reads as it was (stored as every response).
    assert sdk.responses.input_items.list(made.id).data[0].content[0].text == "four"  # type: ignore[union-attr]


def test_a_conversation_turn_with_function_calls_is_kept_as_items(stack_once: Stack, fake: FakeModelServer) -> None:
    sdk = client(stack_once)
    conversation = sdk.conversations.create()
    tool = {"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}
    first = sdk.responses.create(model="fake-model", input="Oslo", tools=[tool], conversation=conversation.id)
    (call,) = first.output
    assert call.type == "function_call"
    second = sdk.responses.create(
        model="fake-model", conversation=conversation.id, tools=[tool],
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "found"}],
    )  # fmt: skip
    assert second.output_text == "echo: found"
    items = list(sdk.conversations.items.list(conversation.id, order="asc"))
    kinds = [(i.type, getattr(i, "call_id", None)) for i in items]
    assert kinds == [("message", None), ("function_call", call.call_id), ("function_call_output", call.call_id),
                     ("message", None)]  # fmt: skip
    assert items[1].id == call.id and items[1].arguments == call.arguments  # type: ignore[union-attr]
    asked = fake.completions[-1]["messages"]
    assert asked[1]["tool_calls"][0]["id"] == call.call_id
    assert asked[2] == {"role": "tool", "tool_call_id": call.call_id, "content": "found"}


def test_two_responses_ending_at_once_lose_no_item(make_stack: StackFactory, fake: FakeModelServer) -> None:
    stack = make_stack(workers=2)
    sdk = client(stack)
    conversation = sdk.conversations.create()
    fake.latency = 0.5
    start = threading.Barrier(4)
    made: dict[int, str] = {}

    def turn(n: int) -> None:
        start.wait()
        made[n] = sdk.responses.create(model="fake-model", input=f"turn {n}", conversation=conversation.id).id

    threads = [threading.Thread(target=turn, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(made) == 4
    said = texts(list(sdk.conversations.items.list(conversation.id, order="asc", limit=100)))
    assert sorted(said) == sorted([("user", f"turn {n}") for n in range(4)] + [("assistant", f"echo: turn {n}")
                                                                               for n in range(4)])  # fmt: skip
    for n in range(4):  # each turn whole: its input, then its output
        place = said.index(("user", f"turn {n}"))
        assert said[place + 1] == ("assistant", f"echo: turn {n}")


def test_a_conversation_with_previous_response_id_is_refused_naming_both(stack_once: Stack) -> None:
    sdk = client(stack_once)
    conversation = sdk.conversations.create()
    before = sdk.responses.create(model="fake-model", input="x")
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.responses.create(model="fake-model", input="y", conversation=conversation.id,
                             previous_response_id=before.id)  # fmt: skip
    message = refused.value.body["message"]  # type: ignore[index]
    assert "conversation" in message and "previous_response_id" in message
    with pytest.raises(openai.NotFoundError) as missing:
        sdk.responses.create(model="fake-model", input="y", conversation="conv_000none")
    assert "conversation" in missing.value.body["message"]  # type: ignore[index]
    with pytest.raises(openai.UnprocessableEntityError) as empty:
        sdk.responses.create(model="fake-model", conversation=conversation.id)
    assert "input" in empty.value.body["message"]  # type: ignore[index]
    assert sdk.conversations.items.list(conversation.id).data == []


def files_of(stack: Stack) -> Path:
    return Path(stack.env["FILE_STORE_URL"])


EVIL = "\\ud800"


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "", {"metadata": {f"k{n}": "v" for n in range(17)}}, "metadata"),
        ("POST", "", {"metadata": {"k": "v" * 513}}, "metadata"),
        ("POST", "", {"metadata": {"k" * 65: "v"}}, "metadata"),
        ("POST", "", {"metadata": {"k": 1}}, "metadata"),
        ("POST", "", {"metadata": "not a map"}, "metadata"),
        ("POST", "", {"items": [{"role": "user", "content": "x"}] * 21}, "items"),
        ("POST", "", {"items": [{"role": "wizard", "content": "x"}]}, "items"),
        ("POST", "", {"items": [{"type": "item_reference", "id": "msg_1"}]}, "items"),
        ("POST", "", {"items": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}, "items"),
        ("POST", "", {"items": "x"}, "items"),
        ("POST", "/items", {"items": []}, "items"),
        ("POST", "/items", {}, "items"),
    ],
)
def test_worst_bodies_are_a_4xx_naming_the_field_and_keep_nothing(
    stack_once: Stack, method: str, path: str, body: dict[str, object], field: str
) -> None:
    conversation = client(stack_once).conversations.create()
    before = sorted(p.name for p in (files_of(stack_once) / "conversations" / "default").iterdir())
    answer = httpx.request(method, f"{stack_once.url}/v1/conversations{path.replace('/items', '')}"
                           f"{'' if not path else '/' + conversation.id + path}", json=body, timeout=30)  # fmt: skip
    assert 400 <= answer.status_code < 500, answer.text
    assert field in answer.json()["error"]["message"], answer.text
    after = sorted(p.name for p in (files_of(stack_once) / "conversations" / "default").iterdir())
    assert after == before
    assert client(stack_once).conversations.items.list(conversation.id).data == []


def test_lone_surrogates_and_deep_nesting_are_refused_naming_the_field(stack_once: Stack) -> None:
    url = f"{stack_once.url}/v1/conversations"
    conversation = client(stack_once).conversations.create()
    bodies = [
        (url, '{"metadata": {"k": "' + EVIL + '"}}', "metadata.k"),
        (url, '{"metadata": {"' + EVIL + '": "v"}}', "metadata"),
        (f"{url}/{conversation.id}/items", '{"items": [{"role": "user", "content": "' + EVIL + '"}]}', "items"),
        (f"{url}/{conversation.id}", '{"metadata": {"k": "' + EVIL + '"}}', "metadata"),
        (url, '{"metadata": ' + "[" * 100 + "]" * 100 + "}", "metadata"),
    ]
    for target, raw, field in bodies:
        answer = httpx.post(target, content=raw.encode(), headers={"Content-Type": "application/json"}, timeout=30)
        assert 400 <= answer.status_code < 500 and field in answer.json()["error"]["message"], (raw[:60], answer.text)
    assert client(stack_once).conversations.items.list(conversation.id).data == []
    assert client(stack_once).conversations.retrieve(conversation.id).metadata == {}


@pytest.mark.parametrize(
    ("method", "path", "field"),
    [
        ("GET", "/conv_bad!id", "conversation_id"),
        ("GET", "/resp_123", "conversation_id"),
        ("DELETE", "/" + "conv_" + "a" * 65, "conversation_id"),
        ("POST", "/conv_..", "conversation_id"),
        ("GET", "/{conv}/items?limit=0", "limit"),
        ("GET", "/{conv}/items?limit=101", "limit"),
        ("GET", "/{conv}/items?limit=x", "limit"),
        ("GET", "/{conv}/items?order=sideways", "order"),
        ("GET", "/{conv}/items?after=" + "a" * 300, "after"),
        ("GET", "/{conv}/items/bad%20id", "item_id"),
        ("DELETE", "/{conv}/items/" + "i" * 129, "item_id"),
        ("GET", "/{conv}/items/%ED%A0%80", "item_id"),
    ],
)
def test_bad_ids_and_queries_are_a_4xx_naming_them(stack_once: Stack, method: str, path: str, field: str) -> None:
    conversation = client(stack_once).conversations.create()
    answer = httpx.request(method, f"{stack_once.url}/v1/conversations{path.replace('{conv}', conversation.id)}",
                           json={"metadata": {}} if method == "POST" else None, timeout=30)  # fmt: skip
    assert 400 <= answer.status_code < 500 and field in answer.json()["error"]["message"], answer.text
    assert client(stack_once).conversations.retrieve(conversation.id).id == conversation.id


def test_a_conversation_is_its_tenants_alone(make_stack: StackFactory, fake: FakeModelServer, tmp_path: Path) -> None:
    stack = walled_stack(make_stack, tmp_path)
    alpha, beta = sdk_of(stack, "alpha-key"), sdk_of(stack, "beta-key")
    mine = alpha.conversations.create(items=[{"role": "user", "content": "alpha's secret"}], metadata={"k": "v"})
    item = alpha.conversations.items.list(mine.id).data[0]
    # Every call of the SDK, as beta: each as for a conversation that does not exist.
    calls = [
        lambda c, i: beta.conversations.retrieve(c),
        lambda c, i: beta.conversations.update(c, metadata={"k": "beta's"}),
        lambda c, i: beta.conversations.items.list(c),
        lambda c, i: beta.conversations.items.create(c, items=[{"role": "user", "content": "beta's"}]),
        lambda c, i: beta.conversations.items.retrieve(i, conversation_id=c),
        lambda c, i: beta.conversations.items.delete(i, conversation_id=c),
        lambda c, i: beta.responses.create(model="fake-model", input="beta's", conversation=c),
        lambda c, i: beta.conversations.delete(c),
    ]
    for call in calls:
        with pytest.raises(openai.NotFoundError) as theirs:
            call(mine.id, item.id)
        with pytest.raises(openai.NotFoundError) as missing:
            call("conv_000none", "msg_000none")
        assert str(theirs.value).replace(mine.id, "<id>") == str(missing.value).replace("conv_000none", "<id>")
    asked = len(fake.completions)
    assert alpha.conversations.retrieve(mine.id).metadata == {"k": "v"}
    assert [i.id for i in alpha.conversations.items.list(mine.id)] == [item.id]
    assert len(fake.completions) == asked  # beta's response was never asked of the model
    # No key: 401 on every route, the id-less create included.
    one, items, its = f"/{mine.id}", f"/{mine.id}/items", f"/{mine.id}/items/{item.id}"
    routes = [("POST", ""), ("GET", one), ("POST", one), ("DELETE", one), ("GET", items), ("POST", items),
              ("GET", its), ("DELETE", its)]  # fmt: skip
    for method, path in routes:
        answer = httpx.request(method, f"{stack.url}/v1/conversations{path}", json={"metadata": {}}, timeout=30)
        assert answer.status_code == 401, (method, path, answer.text)
    assert httpx.post(f"{stack.url}/v1/responses", json={"input": "x", "conversation": mine.id}).status_code == 401
    # An admin key reads it, naming its tenant.
    admin = httpx.get(f"{stack.url}/v1/conversations/{mine.id}?tenant=alpha", headers=auth("ops-key"), timeout=30)
    assert admin.status_code == 200 and admin.json()["metadata"] == {"k": "v"}
    # Nothing beta did was kept, under its name or alpha's.
    kept = Path(stack.env["FILE_STORE_URL"]) / "conversations"
    assert sorted(p.name for p in kept.iterdir()) == ["alpha"]
