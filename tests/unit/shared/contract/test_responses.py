"""A response's record, as the API writes it and its worker writes it again."""

from __future__ import annotations

import pytest

from shared.config import Config
from shared.contract.responses import dump_record, load_record, record_ttl

pytestmark = pytest.mark.unit


def test_a_record_is_kept_response_ttl_or_else_result_ttl() -> None:
    assert record_ttl(Config(_env_file=None, response_ttl=600, result_ttl=60)) == 600  # type: ignore[call-arg]
    assert record_ttl(Config(_env_file=None, response_ttl=0, result_ttl=60)) == 60  # type: ignore[call-arg]


def test_a_record_reads_back_as_written_and_none_when_absent() -> None:
    record = {"request": {"model": "m"}, "history": [], "input_items": [{"type": "message"}]}
    assert load_record(dump_record(record)) == record
    assert load_record(dump_record(record).encode()) == record
    assert load_record(None) is None
