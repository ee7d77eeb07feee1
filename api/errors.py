"""Every failure the API reports, and the HTTP status it is reported with."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException


class ApiError(HTTPException):
    """A failure with a fixed status; ``detail`` is the message the client reads."""

    status_code = 500

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(self.status_code, message, headers)


class BrokerUnavailable(ApiError):
    status_code = 503


class ResultStoreUnavailable(ApiError):
    status_code = 503


class ModelServerUnavailable(ApiError):
    status_code = 502


class ModelServerTimeout(ApiError):
    status_code = 504


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


class JobNotFound(ApiError):
    status_code = 404


class JobFailed(ApiError):
    status_code = 500


class ModelServerRejected(HTTPException):
    """The model server refused the request; its status (4xx) and message are passed on."""

    def __init__(self, message: str, status_code: int | None) -> None:
        if status_code is None or not 400 <= status_code < 500:
            status_code = 400
        super().__init__(status_code, message)


# Worker exception names (``exc_type`` in a failed job's stored result) and what
# the caller gets for each. The API never imports worker code, so the names are
# matched as strings; tests check them against the worker's classes.
def error_for_failure(exc_type: str, exc_args: list[Any]) -> HTTPException:
    """The HTTP error for a job that failed on the worker with `exc_type(*exc_args)`."""
    message = str(exc_args[0]) if exc_args else exc_type
    status = exc_args[1] if len(exc_args) > 1 and isinstance(exc_args[1], int) else None
    if exc_type in ("ModelServerUnavailable", "ModelServerFailed"):
        return ModelServerUnavailable(message)
    if exc_type == "ModelServerTimeout":
        return ModelServerTimeout(message)
    if exc_type == "ModelServerRejected":
        return ModelServerRejected(message, status)
    if exc_type == "InvalidJob":
        return HTTPException(422, message)
    return JobFailed(f"job failed: {exc_type}: {message}")
