"""A /v1/responses response's end, kept where a Redis that comes back empty does not
reach: its outcome in the file store, for a stored response (shared/storage/
response_files.py), and its turn (its input items, then its output items) added to
its conversation (shared/storage/conversation_files.py).

Both are written by the worker that ran it, before its answer is relayed or stored:
a client that saw the response end finds its conversation holding the turn, whether
it waited, streamed, or polled a background response. A file store that fails costs
the response nothing (its answer is in Redis): the warning is logged.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from shared.config import Config
from shared.contract import JobFailure, JobStatus, failure_status
from shared.contract.response_items import output_items
from shared.contract.responses import record_ttl
from shared.storage.conversation_files import ConversationFiles
from shared.storage.file_store import FileStore
from shared.storage.response_files import KeptResponses

log = logging.getLogger(__name__)


def conversation_items(record: dict[str, Any], answer: dict[str, Any]) -> list[dict[str, Any]]:
    """A response's turn as its conversation keeps it: its input items, then its output's."""
    given = [
        {**item, "status": item.get("status") or "completed"} if item.get("type") == "message" else item
        for item in record.get("input_items") or []
    ]
    return [*given, *output_items(record["id"], answer)]


class ResponseOutcomes:
    """Writes how responses ended into the file store (blocking calls, on the worker's thread)."""

    def __init__(self, config: Config, store: FileStore) -> None:
        self.kept = KeptResponses(store, record_ttl(config))
        self.conversations = ConversationFiles(store)

    def succeeded(self, record: dict[str, Any], answer: dict[str, Any]) -> None:
        """The response answered: its turn added to its conversation, its outcome kept."""
        response_id, tenant = record["id"], record["tenant"]
        try:
            conversation = record.get("conversation")
            if conversation:
                items = conversation_items(record, answer)
                if not self.conversations.add_turn(tenant, conversation, response_id, items):
                    log.info("response %s: its conversation %s was deleted; its turn is not kept", response_id,
                             conversation)  # fmt: skip
            if record["request"].get("store", True):
                self.kept.save_outcome(tenant, response_id, {"status": JobStatus.SUCCEEDED.value, "result": answer,
                                                             "finished_at": _now()})  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - the answer matters more than its copy
            log.warning("response %s: its end was not kept in the file store: %s: %s", response_id,
                        type(exc).__name__, exc)  # fmt: skip

    def failed(self, record: dict[str, Any], failure: JobFailure) -> None:
        """The response failed for good (a failure of the contract's): its outcome kept."""
        if not record["request"].get("store", True):
            return
        status, message = failure_status(type(failure).__name__, list(failure.args), type(failure).__module__)
        error = {"type": type(failure).__name__, "message": message, "status_code": status}
        try:
            self.kept.save_outcome(record["tenant"], record["id"], {"status": JobStatus.FAILED.value, "error": error,
                                                                    "finished_at": _now()})  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - the failure is stored in Redis all the same
            log.warning("response %s: its failure was not kept in the file store: %s", record["id"], exc)


def _now() -> str:
    return datetime.now(UTC).isoformat()
