"""Stored /v1/responses responses (``store: true``) in the file store, beside Redis: a
response is found, and answered, for RESPONSE_TTL from its creation, whatever Redis
forgot (a Redis that came back empty). Blocking calls (the API runs them off its event
loop).

    responses/{tenant}/{response_id}/record.json
            its record, as Redis keeps it (shared/contract/responses.py): written by
            the API once its job is queued
    responses/{tenant}/{response_id}/outcome.json
            how it ended: {"status": succeeded, "result": the job's answer} (or
            failed with its "error", or cancelled), "finished_at"; written by the
            worker that ran it (the API, for a cancellation)
    responses-expiring/{minute}/{expires_at}~{tenant}~{response_id}
            empty: when the response is gone, in the folder of its minute (since
            the epoch), for the sweep to find what expired without reading every
            response

A response older than RESPONSE_TTL is not answered (`record` removes it as it reads
it), and the API's sweep (`sweep`, every RESPONSE_SWEEP_SECONDS) removes those no one
read.
"""

from __future__ import annotations

import json
import time
from typing import Any

from shared.storage.file_store import FileStore

EXPIRING = "responses-expiring"


def response_folder(tenant: str, response_id: str) -> str:
    return f"responses/{tenant}/{response_id}"


def _record(tenant: str, response_id: str) -> str:
    return f"{response_folder(tenant, response_id)}/record.json"


def _outcome(tenant: str, response_id: str) -> str:
    return f"{response_folder(tenant, response_id)}/outcome.json"


class KeptResponses:
    """Responses' records and outcomes in the file store, each kept `ttl` seconds from
    its creation (blocking calls)."""

    def __init__(self, store: FileStore, ttl: int) -> None:
        self.store = store
        self.ttl = ttl

    def save_record(self, record: dict[str, Any]) -> None:
        """Keep a response's record (its id, tenant and created_at in it), unless kept already."""
        tenant, response_id = record["tenant"], record["id"]
        path = _record(tenant, response_id)
        if self.store.exists(path):
            return  # a client's retry of the same request: the first one's stays
        expires = int(record["created_at"]) + self.ttl
        self.store.put(f"{EXPIRING}/{expires // 60:010d}/{expires:012d}~{tenant}~{response_id}", b"")
        self.store.put(path, json.dumps(record).encode())

    def record(self, tenant: str, response_id: str, now: float | None = None) -> dict[str, Any] | None:
        """The response's record; None when there is none, or it expired (then removed)."""
        raw = self.store.get(_record(tenant, response_id))
        if raw is None:
            return None
        found = json.loads(raw)
        if int(found["created_at"]) + self.ttl <= (time.time() if now is None else now):
            self.delete(tenant, response_id)
            return None
        return found

    def save_outcome(self, tenant: str, response_id: str, outcome: dict[str, Any]) -> bool:
        """Keep how the response ended, the first time it is told: whether it was kept.
        Its record is not asked for (its worker may end it before the API kept it); an
        outcome without one (a response deleted as it ended) is never answered, and goes
        with the sweep."""
        if self.store.exists(_outcome(tenant, response_id)):
            return False
        self.store.put(_outcome(tenant, response_id), json.dumps(outcome).encode())
        return True

    def outcome(self, tenant: str, response_id: str) -> dict[str, Any] | None:
        """How the response ended; None while it has not (as far as the file store knows)."""
        raw = self.store.get(_outcome(tenant, response_id))
        return json.loads(raw) if raw is not None else None

    def delete(self, tenant: str, response_id: str) -> None:
        """Remove the response (its entry among the expiring goes with the sweep)."""
        self.store.delete_folder(response_folder(tenant, response_id))

    def sweep(self, now: float | None = None) -> int:
        """Remove every response expired by `now`: how many. Reads the folders of the
        minutes up to now's alone (and each past minute's once: it goes with them)."""
        now = time.time() if now is None else now
        current = int(now) // 60
        removed = 0
        for minute in self.store.names(EXPIRING):
            if not minute.isdigit() or int(minute) > current:
                continue
            folder = f"{EXPIRING}/{minute}"
            for entry in self.store.names(folder):
                expires, _, rest = entry.partition("~")
                tenant, _, response_id = rest.partition("~")
                if not expires.isdigit() or int(expires) > now:
                    continue
                if response_id:
                    self.delete(tenant, response_id)
                    removed += 1
                self.store.delete(f"{folder}/{entry}")
            if int(minute) < current:
                self.store.delete_folder(folder)
        return removed
