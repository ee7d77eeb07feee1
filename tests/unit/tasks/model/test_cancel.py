"""A cancel from another thread stops what the call waits on: a reply being read, a wait for a slot."""

from __future__ import annotations

import pytest

from tasks.model.cancel import Cancel

pytestmark = pytest.mark.unit


class Waiting:
    def __init__(self) -> None:
        self.aborted = 0

    def abort(self) -> None:
        self.aborted += 1


def test_a_cancel_stops_what_the_call_is_attached_to_and_nothing_it_left() -> None:
    cancel, reply, done = Cancel(), Waiting(), Waiting()
    cancel.attach(done)
    cancel.attach(reply)  # the call moved on to its next wait
    assert not cancel.is_set()
    cancel.set()
    assert cancel.is_set() and (reply.aborted, done.aborted) == (1, 0)
    cancel.attach(None)
    cancel.set()
    assert reply.aborted == 1


def test_a_wait_begun_after_the_cancel_is_stopped_at_once() -> None:
    cancel, later = Cancel(), Waiting()
    cancel.set()
    cancel.attach(later)
    assert later.aborted == 1
