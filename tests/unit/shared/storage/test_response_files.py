"""Stored responses in the file store (shared/storage/response_files.py), on a directory:
a record kept once, read until RESPONSE_TTL from its creation, an outcome kept the first
time it is told, and the sweep removing what expired and nothing else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shared.storage.file_store import FileStore
from shared.storage.response_files import EXPIRING, KeptResponses, response_folder

pytestmark = pytest.mark.unit

TTL = 600
NOW = 1_700_000_000  # 20 s into its minute


def record(response_id: str = "resp_1", tenant: str = "alpha", created_at: int = NOW, **fields: Any) -> dict[str, Any]:
    return {"id": response_id, "tenant": tenant, "created_at": created_at, "request": {}, "input_items": [], **fields}


def kept_in(tmp_path: Path) -> KeptResponses:
    return KeptResponses(FileStore(str(tmp_path)), TTL)


def test_a_record_is_kept_once_and_read_until_its_ttl_from_its_creation(tmp_path: Path) -> None:
    kept = kept_in(tmp_path)
    first = record(model="a")
    kept.save_record(first)
    kept.save_record(record(model="b"))  # a client's retry: the first one stays
    assert kept.record("alpha", "resp_1", now=NOW + TTL - 1) == first
    # Another tenant's id is another folder: nothing.
    assert kept.record("beta", "resp_1", now=NOW) is None
    # Its second has come: not answered, and removed as it is read.
    assert kept.record("alpha", "resp_1", now=NOW + TTL) is None
    assert not (tmp_path / response_folder("alpha", "resp_1")).exists()
    assert kept.record("alpha", "resp_1", now=NOW) is None


def test_a_record_is_indexed_under_the_minute_it_expires(tmp_path: Path) -> None:
    kept = kept_in(tmp_path)
    kept.save_record(record())
    expires = NOW + TTL
    assert kept.store.names(EXPIRING) == [f"{expires // 60:010d}"]
    assert kept.store.names(f"{EXPIRING}/{expires // 60:010d}") == [f"{expires:012d}~alpha~resp_1"]


def test_an_outcome_is_kept_the_first_time_it_is_told(tmp_path: Path) -> None:
    kept = kept_in(tmp_path)
    assert kept.outcome("alpha", "resp_1") is None
    assert kept.save_outcome("alpha", "resp_1", {"status": "succeeded", "result": {"content": "a"}})
    # A run of the same job again (its worker died unacknowledged), or a cancel that lost the race.
    assert not kept.save_outcome("alpha", "resp_1", {"status": "cancelled"})
    assert kept.outcome("alpha", "resp_1") == {"status": "succeeded", "result": {"content": "a"}}


def test_deleting_a_response_removes_its_record_and_outcome(tmp_path: Path) -> None:
    kept = kept_in(tmp_path)
    kept.save_record(record())
    kept.save_outcome("alpha", "resp_1", {"status": "succeeded"})
    kept.save_record(record("resp_2"))
    kept.delete("alpha", "resp_1")
    assert kept.record("alpha", "resp_1", now=NOW) is None and kept.outcome("alpha", "resp_1") is None
    assert kept.record("alpha", "resp_2", now=NOW) is not None


def test_the_sweep_removes_what_expired_and_nothing_else(tmp_path: Path) -> None:
    kept = kept_in(tmp_path)
    kept.save_record(record("resp_old", created_at=NOW - 3600))  # expired 50 minutes ago
    kept.save_record(record("resp_edge", tenant="beta", created_at=NOW - TTL))  # expires at NOW exactly
    kept.save_record(record("resp_soon", created_at=NOW - TTL + 1))  # a second from now, this minute
    kept.save_record(record("resp_new", created_at=NOW))  # in ten minutes
    kept.save_outcome("alpha", "resp_old", {"status": "succeeded"})
    assert kept.sweep(now=NOW) == 2
    gone = [("alpha", "resp_old"), ("beta", "resp_edge")]
    assert all(not (tmp_path / response_folder(*each)).exists() for each in gone)
    assert kept.record("alpha", "resp_soon", now=NOW) is not None
    assert kept.record("alpha", "resp_new", now=NOW) is not None
    # A past minute's folder goes with its sweep; the current one's stays (resp_soon is in it).
    minutes = kept.store.names(EXPIRING)
    assert f"{(NOW - 3600 + TTL) // 60:010d}" not in minutes and f"{NOW // 60:010d}" in minutes
    assert kept.sweep(now=NOW) == 0  # each removed once
    assert kept.sweep(now=NOW + 1) == 1  # resp_soon's second came
    assert kept.sweep(now=NOW + TTL) == 1  # and resp_new's
    assert kept.store.names("responses/alpha") == [] and kept.store.names("responses/beta") == []


def test_the_sweep_passes_over_what_is_not_its_own(tmp_path: Path) -> None:
    kept = kept_in(tmp_path)
    minute = f"{EXPIRING}/{NOW // 60 - 1:010d}"
    kept.store.put(f"{minute}/not-a-time~alpha~resp_x", b"")
    kept.store.put(f"{EXPIRING}/notes/anything", b"")
    kept.save_record(record("resp_x", created_at=NOW - TTL - 60))
    assert kept.sweep(now=NOW) == 1
    assert kept.record("alpha", "resp_x", now=NOW - TTL) is None
    assert "notes" in kept.store.names(EXPIRING)  # not a minute: left alone
