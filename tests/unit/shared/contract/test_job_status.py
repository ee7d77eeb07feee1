"""A job's status and the verdicts of its start, as the contract names them."""

from __future__ import annotations

import json
import re

import pytest

from shared.contract import STATUS_NAMES, CancelOutcome, JobStatus, Start, State

pytestmark = pytest.mark.unit


def test_only_queued_and_running_jobs_are_unfinished() -> None:
    assert {status for status in JobStatus if not status.finished} == {JobStatus.QUEUED, JobStatus.RUNNING}


def test_every_stored_state_has_a_finished_status() -> None:
    assert set(STATUS_NAMES) == set(State)
    assert all(status.finished for status in STATUS_NAMES.values())


def test_statuses_are_written_as_the_words_clients_read() -> None:
    # GET /jobs/{id} answers them in JSON: the enum must stay the plain words.
    assert json.dumps([*JobStatus]) == '["queued", "running", "succeeded", "failed", "cancelled"]'
    assert JobStatus("running") is JobStatus.RUNNING


def test_start_verdicts_are_the_words_the_start_script_answers() -> None:
    from shared.contract.scripts import MARK_STARTED

    for verdict in Start:
        assert f"return '{verdict}'" in MARK_STARTED


def test_cancel_outcomes_are_the_words_the_cancel_script_answers() -> None:
    from shared.contract.scripts import CANCEL

    answered = set(re.findall(r"return '(\w+)'", CANCEL))
    assert answered == {str(outcome) for outcome in CancelOutcome}
