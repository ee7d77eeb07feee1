"""Every failure the API reports, and the HTTP status it is reported with."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException

from shared.contract import failure_status


class ApiError(HTTPException):
    """A failure with a fixed status; ``detail`` is the message the client reads."""

    status_code = 500

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(self.status_code, message, headers)


class BrokerUnavailable(ApiError):
    status_code = 503


class ResultStoreUnavailable(ApiError):
    status_code = 503


class JobTimedOut(ApiError):
    status_code = 504


class JobCancelled(ApiError):
    status_code = 409


class JobConflict(ApiError):
    """The job_id belongs to a job with another body."""

    status_code = 409


class QueueFull(ApiError):
    """Too many jobs wait to start already (MAX_QUEUED_JOBS)."""

    status_code = 429


class ModelNotFound(ApiError):
    """A model the registry does not list (nothing was queued)."""

    status_code = 404


class QueueNotFound(ApiError):
    """A queue_name no model is served from (nothing was queued)."""

    status_code = 404


class QueueMismatch(ApiError):
    """A queue_name and a meta.model that name different models."""

    status_code = 422


class JobNotFound(ApiError):
    status_code = 404


class JobFailed(ApiError):
    """A job ended with a failure; its status is the contract's for that failure
    (shared/contract/), its `cause` the failure's name (metrics count by it)."""

    def __init__(self, message: str, status_code: int = 500, cause: str = "JobFailed") -> None:
        super().__init__(message)
        self.status_code = status_code
        self.cause = cause


def error_for_failure(exc_type: str, exc_args: list[Any]) -> JobFailed:
    """The HTTP error for a job that failed on the worker with `exc_type(*exc_args)`."""
    status, message = failure_status(exc_type, exc_args)
    return JobFailed(message, status, exc_type)


def cause(exc: Exception) -> str:
    """What metrics and logs call an error: a failed job's failure, else its class."""
    return getattr(exc, "cause", None) or type(exc).__name__
