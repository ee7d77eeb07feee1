"""Every failure the API reports: plain exceptions, raised wherever it is found (the
job layer, tenancy, batches). Which HTTP status each is answered with is decided in
one table (api/http/statuses.py), and answered by one handler, the route class's
(api/http/route_class.py).

Each class is a failure a caller handles differently; the families below (what is
wrong with the request, what is missing, what is busy, what is down) are what the
table maps.
"""

from __future__ import annotations

from typing import Any

from shared.contract import failure_status


class GatewayError(Exception):
    """A failure the client is told of.

    `message` is what it reads; `retry_after` (seconds) says that the same request may
    succeed later; `location` is where the job it concerns can be followed.
    """

    # OpenAI's error `type` and `code` for this failure, where they are not its status's
    # (api/http/statuses.py ERROR_TYPES, and the status itself).
    error_type: str | None = None
    error_code: str | None = None
    # Whether the same request may succeed if sent again at once (OpenAI's SDKs read it
    # from ``x-should-retry``); None: as its status says.
    should_retry: bool | None = None

    def __init__(self, message: str, *, retry_after: int | None = None, location: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.location = location

    def __str__(self) -> str:
        return self.message


# What the request holds cannot be done: the client's to change.


class InvalidInput(GatewayError):
    """A field, a query or a header is invalid; the message names it."""


class LimitExceeded(InvalidInput):
    """The job holds more than a configured limit allows (the message names the limit)."""


class InvalidJson(InvalidInput):
    """A JSON document with a value the gateway cannot carry; the message names its field."""


class QueueMismatch(InvalidInput):
    """A queue_name and a meta.model that name different models."""


class BadRequest(GatewayError):
    """What OpenAI's Files and Batch API refuse as a bad request: a file with bad lines,
    a batch of a file that is not a batch's input."""


class ReadOnly(BadRequest):
    """A change to what configuration declares (a keys file's tenant, seen as a project):
    it is made there, not through the API."""


class BodyTooLarge(GatewayError):
    """A request body over MAX_BODY_BYTES (BATCH_MAX_FILE_BYTES for files)."""


class FileTooLarge(BodyTooLarge):
    """An uploaded file over BATCH_MAX_FILE_BYTES."""


# Who asks may not.


class Unauthorized(GatewayError):
    """No API key, or not a valid one."""


class Forbidden(GatewayError):
    """A valid key that may not do this (a tenant's key on an operators' endpoint)."""


# What the request names is not there (or is another tenant's: the same answer).


class NotFound(GatewayError):
    """Nothing of that name is the request's to see."""


class JobNotFound(NotFound):
    """No job of that id (of the request's tenant), or its results expired."""


class ModelNotFound(NotFound):
    """A model the registry does not list (nothing was queued)."""


class QueueNotFound(NotFound):
    """A queue_name no model is served from (nothing was queued)."""


class FileNotFound(NotFound):
    """No file of that id (of the request's tenant)."""


class BatchNotFound(NotFound):
    """No batch of that id (of the request's tenant)."""


class StreamExpired(NotFound):
    """A resume (Last-Event-ID) of a stream whose events are no longer kept (STREAM_TTL
    after its end); its answer is (GET /jobs/{id})."""


class ResponseNotFound(NotFound):
    """No response of that id (of the request's tenant), or it expired or was deleted."""


class ConversationNotFound(NotFound):
    """No conversation of that id (of the request's tenant), or no item of that id in it."""


# The state of what the request names does not allow it.


class Conflict(GatewayError):
    """The request contradicts the state of what it names."""


class JobConflict(Conflict):
    """The job_id belongs to a job with another body."""


class JobCancelled(Conflict):
    """The job was cancelled before it had an answer."""


class BatchConflict(Conflict):
    """The batch is past what the request asks (cancelling a finished batch)."""


# Too much at once: the same request may succeed later (`retry_after`).


class TooManyRequests(GatewayError):
    """A tenant's rate limit or quota, or the queue's bound, is reached."""


class QueueFull(TooManyRequests):
    """Too many jobs wait to start already (MAX_QUEUED_JOBS)."""


class SpendLimitReached(GatewayError):
    """A project's spend this month reached its hard spend limit: nothing more is accepted
    until the limit is raised or the month ends (OpenAI's 429 ``insufficient_quota``, of
    that type and code both)."""

    error_type = "insufficient_quota"
    error_code = "insufficient_quota"
    should_retry = False


class RateLimitExceeded(TooManyRequests):
    """A project's rate limit on a model is reached: OpenAI's error of code
    ``rate_limit_exceeded`` and type ``requests`` or ``tokens`` (`kind`), as its clients
    tell the two apart."""

    error_code = "rate_limit_exceeded"

    def __init__(self, message: str, *, kind: str = "requests", retry_after: int | None = None) -> None:
        super().__init__(message, retry_after=retry_after)
        self.error_type = kind


# A part the job needs is down: named in the message.


class Unavailable(GatewayError):
    """The broker, the result store or the file store cannot be reached."""


class BrokerUnavailable(Unavailable):
    """The broker (RabbitMQ, or Redis as broker) cannot be reached: nothing was queued."""


class ResultStoreUnavailable(Unavailable):
    """The result store (Redis) cannot be reached."""


class FileStoreUnavailable(Unavailable):
    """The file store (a directory, or S3) cannot be reached."""


class ControlPlaneUnavailable(Unavailable):
    """The control plane's database cannot be reached (projects and keys cannot be
    changed or listed now; the keys that worked go on working)."""


# A model server the API asks itself (a count of tokens, not a job): named by its
# model in the message, never by its address.


class ModelServerUnanswered(GatewayError):
    """No server of the model answered (unreachable, timed out, a server error, an
    answer that cannot be read)."""


class NotServedByModelServer(GatewayError):
    """The model's server serves nothing that does what was asked (it counts no tokens)."""


class ModelServerRefused(BadRequest):
    """The model's server refused what it was asked (its 4xx): the request's to change."""


# The job itself.


class JobTimedOut(GatewayError):
    """The job did not finish within the wait; it goes on (`location` follows it)."""


class JobFailed(GatewayError):
    """A job ended with a failure on the worker: `cause` is the failure's name in the
    contract, `status` the status the contract's table gives it (shared/contract/)."""

    def __init__(self, message: str, status: int = 500, cause: str = "JobFailed") -> None:
        super().__init__(message)
        self.status = status
        self.cause = cause


def cause(exc: Exception) -> str:
    """What metrics and logs call a failure: a failed job's failure name, else its class."""
    return getattr(exc, "cause", None) or type(exc).__name__


def job_failure(exc_type: str, exc_args: list[Any], module: str = "") -> JobFailed:
    """The failure a job ended with on the worker, `exc_type(*exc_args)` (of `module`), as
    the contract's table reads it."""
    status, message = failure_status(exc_type, exc_args, module)
    return JobFailed(message, status, exc_type)
