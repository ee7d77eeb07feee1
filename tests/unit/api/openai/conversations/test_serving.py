"""The Conversations API's work (api/openai/conversations/serving.py) on a file store in
the test's folder: a conversation and its items, each of its tenant, paged as OpenAI
pages them, and a conversation's items as a response's context."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from api.errors import ConversationNotFound, FileStoreUnavailable
from api.openai.conversations.serving import Conversations
from api.openai.conversations.types import ConversationCreate, ItemsCreate
from api.openai.responses.sealing import Compacted, CompactionSeal
from shared.storage.conversation_files import ConversationFiles
from shared.storage.file_store import FileStore
from tests.unit.api.edge import config

pytestmark = pytest.mark.unit


SEAL = CompactionSeal(config(compaction_secret="a-unit-tests-compaction-secret-32chars"))


def service(tmp_path: Path) -> Conversations:
    return Conversations(
        ConversationFiles(FileStore(str(tmp_path))),
        CompactionSeal(config(compaction_secret="a-unit-tests-compaction-secret-32chars")),
    )


def run(make: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    return asyncio.run(make())


def said(*texts: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text} for text in texts]


def texts(items: list[dict[str, Any]]) -> list[str]:
    return [item["content"][0]["text"] for item in items]


def test_a_conversation_is_made_with_its_items_each_given_an_id_of_the_gateways(tmp_path: Path) -> None:
    served = service(tmp_path)
    body = ConversationCreate.model_validate({
        "metadata": {"topic": "names"},
        "items": [{"role": "user", "content": "My name is Ada.", "id": "client-own"},
                  {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                  {"type": "function_call_output", "call_id": "c1", "output": "42"}],
    })  # fmt: skip
    made = run(lambda: served.create("alpha", body))
    assert set(made) == {"id", "object", "created_at", "metadata"}  # its tenant is not shown
    assert made["object"] == "conversation" and made["metadata"] == {"topic": "names"}
    assert run(lambda: served.retrieve("alpha", made["id"])) == made
    items = run(lambda: served.context("alpha", made["id"]))
    assert [item["id"].split("_")[0] for item in items] == ["msg", "fc", "fco"]
    assert items[0]["content"] == [{"type": "input_text", "text": "My name is Ada."}]
    assert all(item["status"] == "completed" for item in items)


def test_added_items_are_kept_as_a_responses_input_items_are_with_ids_of_their_own(tmp_path: Path) -> None:
    served = service(tmp_path)
    made = run(lambda: served.create("alpha", ConversationCreate.model_validate({})))
    sealed = SEAL.seal("alpha", Compacted("Ada asked for a summary.", "fake-model", 1))
    body = ItemsCreate.model_validate({"items": [
        {"role": "assistant", "content": "Hello.", "id": "msg_mine"},
        {"type": "compaction", "encrypted_content": sealed, "id": "cmp_1"},
    ]})  # fmt: skip
    added = run(lambda: served.add_items("alpha", made["id"], body))["data"]
    assert added[0]["content"] == [{"type": "output_text", "text": "Hello.", "annotations": []}]
    assert added[1]["type"] == "compaction" and added[1]["encrypted_content"] == sealed  # kept sealed
    # A client's own ids are not kept: two adds of the same item are two items.
    assert "msg_mine" not in [item["id"] for item in added] and "cmp_1" not in [item["id"] for item in added]
    again = run(lambda: served.add_items("alpha", made["id"], body))["data"]
    assert {item["id"] for item in added}.isdisjoint(item["id"] for item in again)
    assert len(run(lambda: served.context("alpha", made["id"]))) == 4


def test_another_tenants_conversation_is_an_unknown_one(tmp_path: Path) -> None:
    served = service(tmp_path)
    made = run(lambda: served.create("alpha", ConversationCreate.model_validate({"items": said("hi")})))
    cid = made["id"]
    item = run(lambda: served.list_items("alpha", cid, None, 20, "desc"))["data"][0]["id"]
    calls = [
        lambda: served.retrieve("beta", cid), lambda: served.update("beta", cid, {}),
        lambda: served.delete("beta", cid), lambda: served.list_items("beta", cid, None, 20, "desc"),
        lambda: served.add_items("beta", cid, ItemsCreate.model_validate({"items": said("x")})),
        lambda: served.item("beta", cid, item), lambda: served.delete_item("beta", cid, item),
    ]  # fmt: skip
    for call in calls:
        with pytest.raises(ConversationNotFound, match=cid):
            run(call)
    with pytest.raises(ConversationNotFound, match="conversation: no conversation"):
        run(lambda: served.context("beta", cid))
    assert texts(run(lambda: served.context("alpha", cid))) == ["hi"]  # untouched


def test_metadata_is_replaced_whole_and_null_is_none(tmp_path: Path) -> None:
    served = service(tmp_path)
    made = run(lambda: served.create("alpha", ConversationCreate.model_validate({"metadata": {"a": "1", "b": "2"}})))
    assert run(lambda: served.update("alpha", made["id"], {"c": "3"}))["metadata"] == {"c": "3"}
    assert run(lambda: served.retrieve("alpha", made["id"]))["metadata"] == {"c": "3"}
    assert run(lambda: served.update("alpha", made["id"], None))["metadata"] == {}


def test_items_page_newest_first_or_oldest_after_an_item(tmp_path: Path) -> None:
    served = service(tmp_path)
    made = run(lambda: served.create("alpha", ConversationCreate.model_validate({"items": said("m0", "m1")})))
    cid = made["id"]
    added = run(lambda: served.add_items("alpha", cid, ItemsCreate.model_validate({"items": said("m2", "m3")})))
    assert texts(added["data"]) == ["m2", "m3"] and not added["has_more"]
    newest = run(lambda: served.list_items("alpha", cid, None, 3, "desc"))
    assert texts(newest["data"]) == ["m3", "m2", "m1"] and newest["has_more"]
    assert newest["first_id"] == newest["data"][0]["id"] and newest["last_id"] == newest["data"][-1]["id"]
    rest = run(lambda: served.list_items("alpha", cid, newest["last_id"], 3, "desc"))
    assert texts(rest["data"]) == ["m0"] and not rest["has_more"]
    oldest = run(lambda: served.list_items("alpha", cid, None, 2, "asc"))
    assert texts(oldest["data"]) == ["m0", "m1"] and oldest["has_more"]
    after = run(lambda: served.list_items("alpha", cid, oldest["last_id"], 2, "asc"))
    assert texts(after["data"]) == ["m2", "m3"] and not after["has_more"]
    nothing = run(lambda: served.list_items("alpha", cid, "msg_unknown", 20, "asc"))
    assert nothing == {"object": "list", "data": [], "first_id": "", "last_id": "", "has_more": False}


def test_an_item_is_read_and_deleted_by_its_id(tmp_path: Path) -> None:
    served = service(tmp_path)
    made = run(lambda: served.create("alpha", ConversationCreate.model_validate({"items": said("keep", "drop")})))
    cid = made["id"]
    keep, drop = run(lambda: served.context("alpha", cid))
    assert run(lambda: served.item("alpha", cid, drop["id"])) == drop
    assert run(lambda: served.delete_item("alpha", cid, drop["id"])) == made
    assert run(lambda: served.context("alpha", cid)) == [keep]
    with pytest.raises(ConversationNotFound, match=f"no item '{drop['id']}'"):
        run(lambda: served.item("alpha", cid, drop["id"]))


def test_a_deleted_conversation_is_gone_with_its_items(tmp_path: Path) -> None:
    served = service(tmp_path)
    made = run(lambda: served.create("alpha", ConversationCreate.model_validate({"items": said("hi")})))
    cid = made["id"]
    assert run(lambda: served.delete("alpha", cid)) == {"id": cid, "object": "conversation.deleted", "deleted": True}
    for call in (lambda: served.retrieve("alpha", cid), lambda: served.delete("alpha", cid),
                 lambda: served.context("alpha", cid)):  # fmt: skip
        with pytest.raises(ConversationNotFound):
            run(call)
    assert not (tmp_path / "conversations" / "alpha" / cid).exists()


def test_a_file_store_that_fails_is_a_503(tmp_path: Path) -> None:
    (tmp_path / "conversations").write_text("not a folder")  # every write under it fails
    with pytest.raises(FileStoreUnavailable):
        run(lambda: service(tmp_path).create("alpha", ConversationCreate.model_validate({"items": said("hi")})))
