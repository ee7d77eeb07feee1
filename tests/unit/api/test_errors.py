"""The failures the API reports (api/errors.py): what a client reads, and what metrics and
logs call each; a worker's failure read as the contract's table says."""

from __future__ import annotations

import pytest

from api.errors import GatewayError, JobFailed, JobTimedOut, QueueFull, cause, job_failure

pytestmark = pytest.mark.unit


def test_a_failure_says_its_message_and_when_and_where_to_follow() -> None:
    error = JobTimedOut("slow", location="https://x/jobs/1")
    assert str(error) == "slow" and error.location == "https://x/jobs/1" and error.retry_after is None
    assert QueueFull("full", retry_after=2).retry_after == 2
    assert isinstance(QueueFull("x"), GatewayError)


def test_metrics_call_a_failed_job_by_its_failures_name_and_any_other_by_its_class() -> None:
    assert cause(JobFailed("x", 502, "ModelServerFailed")) == "ModelServerFailed"
    assert cause(QueueFull("x")) == "QueueFull" and cause(ValueError("x")) == "ValueError"


def test_a_workers_failure_is_read_by_the_contracts_table() -> None:
    rejected = job_failure("ModelServerRejected", ["unknown model 'x'", 404], "shared.contract")
    assert (rejected.status, rejected.message, rejected.cause) == (404, "unknown model 'x'", "ModelServerRejected")
    unknown = job_failure("ConnectionError", ["Error 111 connecting to 10.0.0.5:6379"], "redis.exceptions")
    assert unknown.status == 500 and "10.0.0.5" not in unknown.message and "Redis" in unknown.message
