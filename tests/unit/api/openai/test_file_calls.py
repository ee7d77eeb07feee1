"""Calls on the file store from the event loop (api/openai/file_calls.py): run off the
loop, a failing store answered as unavailable (503) without saying where it lives."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from api.errors import FileStoreUnavailable
from api.openai.file_calls import in_file_store

pytestmark = pytest.mark.unit


def test_a_call_runs_off_the_event_loop_and_its_answer_is_returned() -> None:
    async def main() -> None:
        loop_thread = threading.get_ident()
        ran_on = await in_file_store(lambda a, b: (threading.get_ident(), a + b), 2, 3)
        assert ran_on[0] != loop_thread and ran_on[1] == 5

    asyncio.run(main())


@pytest.mark.parametrize("failure", [PermissionError(13, "Permission denied", "/srv/secret/store/x"),
                                     ValueError("bucket s3://private-bucket: bad endpoint")])  # fmt: skip
def test_a_store_that_fails_is_unavailable_and_the_answer_names_no_place(
    failure: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    def fails() -> None:
        raise failure

    with (
        caplog.at_level(logging.WARNING, logger="api.openai.file_calls"),
        pytest.raises(FileStoreUnavailable) as raised,
    ):
        asyncio.run(in_file_store(fails))
    said = str(raised.value)
    assert said == f"file store unavailable ({type(failure).__name__})"
    assert "secret" not in said and "private-bucket" not in said
    assert str(failure) in caplog.text  # where and why: for the operator, in the log


def test_a_bug_is_not_taken_for_an_unavailable_store() -> None:
    def broken() -> None:
        raise KeyError("id")

    with pytest.raises(KeyError):
        asyncio.run(in_file_store(broken))
