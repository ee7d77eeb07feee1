"""Conversations in the file store (shared/storage/conversation_files.py), on a directory:
items in the order they were added, each turn once and together, nothing kept for a
conversation deleted, and each conversation its tenant's."""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import pytest

from shared.storage.conversation_files import (
    CONVERSATION_ID_PATTERN,
    ConversationFiles,
    conversation_folder,
    item_id_of,
    new_conversation_id,
    new_item_id,
)
from shared.storage.file_store import FileStore

pytestmark = pytest.mark.unit


def message(item_id: str, text: str) -> dict[str, Any]:
    return {"id": item_id, "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def conversation(conversation_id: str = "conv_1") -> dict[str, Any]:
    return {"id": conversation_id, "object": "conversation", "created_at": 1, "metadata": {}, "tenant": "alpha"}


def files_in(tmp_path: Path) -> ConversationFiles:
    return ConversationFiles(FileStore(str(tmp_path)))


def ids(files: ConversationFiles, tenant: str = "alpha", conversation_id: str = "conv_1") -> list[str]:
    return [item["id"] for item in files.items(tenant, conversation_id)]


def test_ids_made_here_are_ids_the_routes_take() -> None:
    made = new_conversation_id()
    assert re.match(CONVERSATION_ID_PATTERN, made) and made != new_conversation_id()
    assert new_item_id("message").startswith("msg_") and new_item_id("function_call").startswith("fc_")
    assert new_item_id("function_call_output").startswith("fco_")
    assert item_id_of("00000000000000000001-abc-00002~msg_x.json") == "msg_x"


def test_a_conversation_is_made_with_its_items_read_back_and_its_tenants_alone(tmp_path: Path) -> None:
    files = files_in(tmp_path)
    files.create("alpha", conversation(), [message("msg_a", "one"), message("msg_b", "two")])
    assert files.get("alpha", "conv_1") == conversation()
    assert ids(files) == ["msg_a", "msg_b"]
    assert files.get("beta", "conv_1") is None and files.items("beta", "conv_1") == []
    files.put("alpha", {**conversation(), "metadata": {"topic": "x"}})
    assert files.get("alpha", "conv_1")["metadata"] == {"topic": "x"}  # type: ignore[index]


def test_items_added_later_come_after_in_the_order_given(tmp_path: Path) -> None:
    files = files_in(tmp_path)
    files.create("alpha", conversation(), [message("msg_a", "one")])
    # More than ten at once: their order is their place, not their names' (msg_10 < msg_2 as text).
    batch = [message(f"msg_{n}", str(n)) for n in range(12)]
    assert files.add("alpha", "conv_1", batch)
    assert files.add("alpha", "conv_1", [message("msg_z", "last")])
    assert ids(files) == ["msg_a", *[f"msg_{n}" for n in range(12)], "msg_z"]
    assert [item_id_of(name) for name in files.names("alpha", "conv_1")] == ids(files)


def test_nothing_is_added_to_a_conversation_that_does_not_exist(tmp_path: Path) -> None:
    files = files_in(tmp_path)
    assert not files.add("alpha", "conv_none", [message("msg_a", "one")])
    assert not files.add_turn("alpha", "conv_none", "resp_1", [message("msg_a", "one")])
    assert not (tmp_path / conversation_folder("alpha", "conv_none")).exists()


def test_a_turn_is_added_once_whatever_its_runs(tmp_path: Path) -> None:
    files = files_in(tmp_path)
    files.create("alpha", conversation(), [])
    turn = [message("in_1_0", "hi"), {"id": "msg_1_0", "type": "message", "role": "assistant", "content": []}]
    assert files.add_turn("alpha", "conv_1", "resp_1", turn)
    files.add("alpha", "conv_1", [message("msg_later", "later")])
    # Its job run again (its worker died before acknowledging it): the same objects, where they were.
    assert files.add_turn("alpha", "conv_1", "resp_1", turn)
    assert ids(files) == ["in_1_0", "msg_1_0", "msg_later"]


def test_a_turns_items_with_ids_no_object_can_be_named_by_get_ids_of_their_own(tmp_path: Path) -> None:
    files = files_in(tmp_path)
    files.create("alpha", conversation(), [])
    turn = [message("a/b", "slash"), message("", "empty"), message("in_abc_1", "taken"), message("x" * 200, "long")]
    files.add_turn("alpha", "conv_1", "resp_abc", turn)
    made = ids(files)
    # The turn's own ids, none two alike (in_abc_1 is the request's own already).
    assert made[2] == "in_abc_1" and len(set(made)) == 4
    assert made[0] == "in_abc_0" and made[1] not in ("", "in_abc_1") and made[3] == "in_abc_3"
    assert [item["content"][0]["text"] for item in files.items("alpha", "conv_1")] == ["slash", "empty", "taken",
                                                                                         "long"]  # fmt: skip


def test_two_turns_ending_at_once_both_add_every_item_each_turn_together(tmp_path: Path) -> None:
    files = files_in(tmp_path)
    files.create("alpha", conversation(), [])
    turns = {name: [message(f"{name}_{n}", str(n)) for n in range(20)] for name in ("a", "b")}
    start = threading.Barrier(2)

    def add(name: str) -> None:
        start.wait()
        files.add_turn("alpha", "conv_1", f"resp_{name}", turns[name])

    threads = [threading.Thread(target=add, args=(name,)) for name in turns]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    found = ids(files)
    assert sorted(found) == sorted(item["id"] for turn in turns.values() for item in turn)
    first = found[0].split("_")[0]
    assert found == [item["id"] for item in turns[first] + turns["b" if first == "a" else "a"]]


def test_an_item_is_found_by_its_id_and_deleted_alone(tmp_path: Path) -> None:
    files = files_in(tmp_path)
    files.create("alpha", conversation(), [message("msg_a", "one"), message("msg_b", "two")])
    name = files.find("alpha", "conv_1", "msg_b")
    assert name is not None and files.read("alpha", "conv_1", [name]) == [message("msg_b", "two")]
    assert files.find("alpha", "conv_1", "msg_none") is None
    files.delete_item("alpha", "conv_1", name)
    assert ids(files) == ["msg_a"]
    # An item deleted meanwhile is left out of a read of names listed before.
    assert files.read("alpha", "conv_1", [name]) == []


def test_a_deleted_conversation_takes_its_items_and_keeps_nothing_added_after(tmp_path: Path) -> None:
    files = files_in(tmp_path)
    files.create("alpha", conversation(), [message("msg_a", "one")])
    files.create("alpha", conversation("conv_2"), [message("msg_b", "two")])
    files.delete("alpha", "conv_1")
    assert files.get("alpha", "conv_1") is None and files.names("alpha", "conv_1") == []
    assert not files.add("alpha", "conv_1", [message("msg_c", "three")])
    assert not (tmp_path / conversation_folder("alpha", "conv_1")).exists()
    assert ids(files, conversation_id="conv_2") == ["msg_b"]


class DeletedAsWritten(FileStore):
    """A store where another request deletes the conversation just as an item is written
    (between `add`'s check that it exists and its write)."""

    def put(self, path: str, data: bytes) -> None:
        super().put(path, data)
        if "/items/" in path:
            self.delete(f"{conversation_folder('alpha', 'conv_1')}/conversation.json")


def test_items_added_as_the_conversation_is_deleted_go_with_it(tmp_path: Path) -> None:
    files = ConversationFiles(DeletedAsWritten(str(tmp_path)))
    files.store.put(f"{conversation_folder('alpha', 'conv_1')}/conversation.json", b"{}")
    assert not files.add("alpha", "conv_1", [message("msg_a", "one")])
    assert not (tmp_path / conversation_folder("alpha", "conv_1")).exists()
