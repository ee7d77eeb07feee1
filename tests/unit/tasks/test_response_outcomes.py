"""How the worker keeps a response's end in the file store: its turn in its
conversation, its outcome for a stored response; a file store that fails costs the
answer nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.config import Config
from shared.contract import ModelServerFailed
from shared.contract.response_items import output_items
from shared.storage.conversation_files import ConversationFiles
from shared.storage.file_store import FileStore
from tasks.response_outcomes import ResponseOutcomes, conversation_items

pytestmark = pytest.mark.unit

ANSWER = {"choices": [{"index": 0, "content": "echo: hi", "finish_reason": "stop"}], "content": "echo: hi"}


def record(**extra: object) -> dict[str, object]:
    return {
        "id": "resp_abc", "tenant": "alpha", "created_at": 1_000_000_000_000, "request": {"store": True},
        "input_items": [
            {"id": "in_abc_0", "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
            {"id": "in_abc_1", "type": "function_call_output", "call_id": "c", "output": "x", "status": "completed"},
        ],
        **extra,
    }  # fmt: skip


def outcomes(path: Path) -> ResponseOutcomes:
    return ResponseOutcomes(Config(_env_file=None), FileStore(str(path)))  # type: ignore[call-arg]


def test_a_turn_is_its_input_then_the_output_the_response_shows() -> None:
    items = conversation_items(record(), ANSWER)  # type: ignore[arg-type]
    assert items[0]["status"] == "completed" and items[0]["content"] == [{"type": "input_text", "text": "hi"}]
    assert items[1]["type"] == "function_call_output"
    assert items[2:] == output_items("resp_abc", ANSWER)


def test_a_response_of_a_conversation_adds_its_turn_even_unstored_and_keeps_its_outcome_if_stored(
    tmp_path: Path,
) -> None:
    kept = outcomes(tmp_path)
    files = ConversationFiles(kept.conversations.store)
    files.create("alpha", {"id": "conv_1", "object": "conversation", "created_at": 1, "metadata": {}}, [])
    kept.succeeded(record(conversation="conv_1"), ANSWER)  # type: ignore[arg-type]
    assert [i["id"] for i in files.items("alpha", "conv_1")] == ["in_abc_0", "in_abc_1", "msg_abc_0"]
    assert kept.kept.outcome("alpha", "resp_abc")["result"] == ANSWER  # type: ignore[index]
    unstored = record(id="resp_def", conversation="conv_1", request={"store": False})
    kept.succeeded(unstored, ANSWER)  # type: ignore[arg-type]
    assert len(files.items("alpha", "conv_1")) == 6 and kept.kept.outcome("alpha", "resp_def") is None
    # Deleted meanwhile: nothing added, nothing raised.
    files.delete("alpha", "conv_1")
    kept.succeeded(record(id="resp_ghi", conversation="conv_1"), ANSWER)  # type: ignore[arg-type]
    assert files.get("alpha", "conv_1") is None and files.names("alpha", "conv_1") == []


def test_a_failure_is_kept_as_the_api_reads_a_failed_job(tmp_path: Path) -> None:
    kept = outcomes(tmp_path)
    kept.failed(record(), ModelServerFailed("the model server answered 500"))  # type: ignore[arg-type]
    outcome = kept.kept.outcome("alpha", "resp_abc")
    assert outcome is not None and outcome["status"] == "failed"
    assert outcome["error"] == {"type": "ModelServerFailed", "message": "the model server answered 500",
                                "status_code": 502}  # fmt: skip


def test_a_file_store_that_fails_costs_the_answer_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    kept = outcomes(tmp_path)
    (tmp_path / "responses").write_text("a file where a folder should be")
    (tmp_path / "conversations").write_text("likewise")
    kept.succeeded(record(conversation="conv_1"), ANSWER)  # type: ignore[arg-type]
    kept.failed(record(), ModelServerFailed("x"))  # type: ignore[arg-type]
    assert "was not kept in the file store" in caplog.text
