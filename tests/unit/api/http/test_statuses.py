"""Every failure the API reports has its status in the one table (api/http/statuses.py)."""

from __future__ import annotations

import inspect

import pytest

from api import errors
from api.errors import GatewayError, JobFailed, JobTimedOut, QueueFull, Unauthorized
from api.http.statuses import refusal, status_of

pytestmark = pytest.mark.unit

EXPECTED = {
    "BadRequest": 400, "Unauthorized": 401, "Forbidden": 403, "JobNotFound": 404, "ModelNotFound": 404,
    "QueueNotFound": 404, "FileNotFound": 404, "BatchNotFound": 404, "JobConflict": 409, "JobCancelled": 409,
    "BatchConflict": 409, "BodyTooLarge": 413, "FileTooLarge": 413, "InvalidInput": 422, "LimitExceeded": 422,
    "InvalidJson": 422, "QueueMismatch": 422, "TooManyRequests": 429, "QueueFull": 429, "BrokerUnavailable": 503,
    "ResultStoreUnavailable": 503, "FileStoreUnavailable": 503, "JobTimedOut": 504, "ModelServerRefused": 400,
    "NotServedByModelServer": 501, "ModelServerUnanswered": 502, "SpendLimitReached": 429,
}  # fmt: skip


def test_every_failure_of_the_api_has_the_status_a_client_expects() -> None:
    failures = {
        name: cls for name, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, GatewayError) and cls.__module__ == errors.__name__
    }  # fmt: skip
    concrete = {name: status_of(cls("x")) for name, cls in failures.items() if name in EXPECTED}
    assert concrete == EXPECTED
    # A class added later without a status of its own takes its family's: never a 500.
    for name, cls in failures.items():
        if name not in ("GatewayError", "JobFailed"):
            assert 400 <= status_of(cls("x")) < 500 or status_of(cls("x")) in (501, 502, 503, 504), name


def test_a_failed_job_is_answered_with_the_contracts_status_for_its_failure() -> None:
    assert status_of(JobFailed("model server answered 502", 502, "ModelServerFailed")) == 502


def test_headers_say_when_to_try_again_where_a_job_goes_on_and_how_to_authenticate() -> None:
    assert refusal(QueueFull("full", retry_after=2)).headers == {"Retry-After": "2"}
    assert refusal(JobTimedOut("slow", location="http://x/jobs/1")).headers == {"Location": "http://x/jobs/1"}
    assert refusal(Unauthorized("no key")).headers == {"WWW-Authenticate": "Bearer"}
    refused = refusal(JobFailed("bad", 422, "ModelServerRejected"))
    assert (refused.status, refused.message, refused.cause) == (422, "bad", "ModelServerRejected")


def test_a_spend_limit_reached_is_openais_insufficient_quota_and_not_to_be_retried() -> None:
    refused = refusal(errors.SpendLimitReached("project 'p' reached its monthly spend limit"))
    assert (refused.status, refused.error_type, refused.error_code) == (429, "insufficient_quota", "insufficient_quota")
    # OpenAI's SDKs retry a 429 unless told not to: the same request would be refused again.
    assert refused.headers == {"x-should-retry": "false"}
    assert refusal(errors.TooManyRequests("busy", retry_after=2)).error_code is None
