"""Conversations and stored responses in the file store, on a directory and on S3:
items added by writers at once all kept, each turn's together and once; a response's
record and outcome kept RESPONSE_TTL, then removed on read or by the sweep."""

from __future__ import annotations

import threading

import pytest

from shared.storage.conversation_files import ConversationFiles, item_id_of, new_conversation_id
from shared.storage.file_store import FileStore
from shared.storage.response_files import KeptResponses

pytestmark = pytest.mark.integration


def message(item_id: str, text: str) -> dict[str, object]:
    return {"id": item_id, "type": "message", "role": "user", "status": "completed",
            "content": [{"type": "input_text", "text": text}]}  # fmt: skip


def conversation(files: ConversationFiles, tenant: str = "alpha") -> str:
    conversation_id = new_conversation_id()
    files.create(tenant, {"id": conversation_id, "object": "conversation", "created_at": 1, "metadata": {}},
                 [message("msg_first", "hello")])  # fmt: skip
    return conversation_id


def test_turns_added_at_once_are_all_kept_each_whole_and_in_one_piece(store: FileStore) -> None:
    files = ConversationFiles(store)
    conversation_id = conversation(files)
    writers, turns, size = 8, 3, 4
    start = threading.Barrier(writers)

    def add(writer: int) -> None:
        start.wait()
        for turn in range(turns):
            items = [message(f"msg_w{writer}t{turn}i{i}", f"{writer}.{turn}.{i}") for i in range(size)]
            assert files.add_turn("alpha", conversation_id, f"resp_w{writer}t{turn}", items)

    threads = [threading.Thread(target=add, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = [item["id"] for item in files.items("alpha", conversation_id)]
    assert ids[0] == "msg_first" and len(ids) == 1 + writers * turns * size == len(set(ids))
    # Each turn's items are together and in their order; a writer's turns in its order.
    for writer in range(writers):
        mine = [i for i in ids if i.startswith(f"msg_w{writer}t")]
        assert mine == [f"msg_w{writer}t{t}i{i}" for t in range(turns) for i in range(size)]
        for turn in range(turns):
            first = ids.index(f"msg_w{writer}t{turn}i0")
            assert ids[first : first + size] == [f"msg_w{writer}t{turn}i{i}" for i in range(size)]


def test_a_turn_added_again_is_kept_once_and_odd_ids_are_made_safe(store: FileStore) -> None:
    files = ConversationFiles(store)
    conversation_id = conversation(files)
    items = [message("../../escape", "odd id"), message("msg_abc_0", "answer")]
    assert files.add_turn("alpha", conversation_id, "resp_abc", items)
    assert files.add_turn("alpha", conversation_id, "resp_abc", items)  # its job run again
    ids = [item["id"] for item in files.items("alpha", conversation_id)]
    assert ids == ["msg_first", "in_abc_0", "msg_abc_0"]
    assert store.names(f"conversations/alpha/{conversation_id}") == ["conversation.json", "items", "turns"]


def test_a_conversation_is_its_tenants_and_deleted_takes_its_items_and_no_more(store: FileStore) -> None:
    files = ConversationFiles(store)
    conversation_id = conversation(files)
    assert files.get("beta", conversation_id) is None and files.names("beta", conversation_id) == []
    assert not files.add("beta", conversation_id, [message("msg_x", "x")])
    assert store.names("conversations/beta") == []  # nothing written for beta
    name = files.find("alpha", conversation_id, "msg_first")
    assert name is not None and item_id_of(name) == "msg_first"
    files.delete("alpha", conversation_id)
    assert files.get("alpha", conversation_id) is None and files.names("alpha", conversation_id) == []
    assert not files.add_turn("alpha", conversation_id, "resp_late", [message("msg_late", "late")])
    assert store.names("conversations/alpha") == []


def test_a_page_reads_only_the_items_asked(store: FileStore) -> None:
    files = ConversationFiles(store)
    conversation_id = conversation(files)
    assert files.add("alpha", conversation_id, [message(f"msg_{n}", str(n)) for n in range(5)])
    names = files.names("alpha", conversation_id)
    assert [item_id_of(n) for n in names] == ["msg_first", *(f"msg_{n}" for n in range(5))]
    files.delete_item("alpha", conversation_id, names[2])
    assert [i["id"] for i in files.read("alpha", conversation_id, names[1:4])] == ["msg_0", "msg_2"]


def test_a_response_is_kept_its_ttl_then_removed_on_read_or_by_the_sweep(store: FileStore) -> None:
    kept = KeptResponses(store, ttl=120)
    for n in range(3):
        kept.save_record({"id": f"resp_{n}", "tenant": "alpha", "created_at": 1000 + n, "request": {}})
    kept.save_record({"id": "resp_0", "tenant": "alpha", "created_at": 5000, "request": {}})  # a retry: the first stays
    assert kept.record("alpha", "resp_0", now=1100)["created_at"] == 1000  # type: ignore[index]
    assert kept.record("beta", "resp_0", now=1100) is None
    assert kept.save_outcome("alpha", "resp_0", {"status": "succeeded", "result": {"content": "a"}})
    assert not kept.save_outcome("alpha", "resp_0", {"status": "failed"})  # the first outcome stays
    assert kept.save_outcome("alpha", "resp_none", {"status": "succeeded"})  # its record to come (or deleted)
    assert kept.record("alpha", "resp_none", now=1100) is None  # not answered without it
    kept.delete("alpha", "resp_none")
    assert kept.outcome("alpha", "resp_0") == {"status": "succeeded", "result": {"content": "a"}}
    assert kept.outcome("alpha", "resp_1") is None
    # Read after its TTL: not answered, and removed.
    assert kept.record("alpha", "resp_0", now=1120) is None
    assert store.names("responses/alpha") == ["resp_1", "resp_2"]
    # The sweep removes what expired by now, to the second, and nothing else.
    assert kept.sweep(now=1000) == 0 and store.names("responses/alpha") == ["resp_1", "resp_2"]
    assert kept.sweep(now=1121) == 2  # resp_0's entry too (its folder was gone already), and resp_1
    assert store.names("responses/alpha") == ["resp_2"]
    assert kept.sweep(now=1200) == 1
    assert store.names("responses/alpha") == [] and store.names("responses-expiring") == []
