"""The contract between the API and the workers: everything both sides must agree on.

- the task names the API sends and the workers register;
- the job payload (`Job`), as the API builds it and the workers parse it;
- the Redis key layout (`Keys`), the job hash's fields, and the Lua scripts that
  move a job through its life (claim, start, store its result, cancel);
- the failures a job can end with (`JobFailure` and its subclasses, raised by the
  workers) and the HTTP status each is answered with;
- the result formats: a stored result's states, the cancelled result, a streamed
  answer's entries.

The API never imports worker code, and the workers never import the API: both
import this module, so a change of contract is a change of this file.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

# The tasks.


class TaskName(StrEnum):
    """The Celery task names: the API sends by name, the workers register these."""

    GENERATE = "llm.generate"  # complete `content`
    CHAT = "llm.chat"  # continue `messages` (or the OpenAI request in `openai`)
    COMPLETE = "llm.complete"  # a raw completion of the OpenAI request in `openai` (no chat template)
    MODELS = "llm.models"  # list the model server's models (the gateway's own job)
    WEBHOOK = "webhook.deliver"  # send one event to one webhook endpoint (retried with backoff)


# Jobs the gateway makes for itself: answered from the model server again when
# needed, never kept as dead letters.
INTERNAL_TASKS = frozenset({TaskName.MODELS})
# Tasks that are not jobs (no claim, no result anyone awaits).
NOT_JOBS = frozenset({TaskName.WEBHOOK})

# The job payload.

# A job's priority: 0 (batch) .. 9 (most urgent); DEFAULT_PRIORITY when it gives none.
DEFAULT_PRIORITY = 5

# OpenAI parameters passed to the model server as given, when a job brings them.
SAMPLING = frozenset({"top_p", "seed", "n", "presence_penalty", "frequency_penalty"})


class JobMeta(BaseModel):
    """How to generate: the spec's ``meta``, plus what the OpenAI endpoints add."""

    model_config = ConfigDict(extra="ignore")

    temperature: float = 0.2
    tokens_limit: int | None = None  # None: the model server's own limit
    stop_words: list[str] = []
    model: str | None = None  # the name the model server serves it by
    priority: int | None = None  # 0 (batch) .. 9 (most urgent)
    sampling: dict[str, Any] = {}  # of SAMPLING only

    @field_validator("sampling", mode="before")
    @classmethod
    def _only_known_sampling(cls, given: Any) -> Any:
        if not given:
            return {}
        if not isinstance(given, dict) or not set(given) <= SAMPLING:
            raise ValueError(f"'sampling' takes only {', '.join(sorted(SAMPLING))}")
        return {key: value for key, value in given.items() if value is not None}


class Message(BaseModel):
    """One turn of a conversation, as the model server gets it."""

    model_config = ConfigDict(extra="ignore")

    role: str
    content: str


class BatchLine(BaseModel):
    """Which line of which batch a job is (gateway/batch_files.py): its worker keeps
    the line's answer or failure in the file store."""

    model_config = ConfigDict(extra="ignore")

    id: str
    line: int


class Job(BaseModel):
    """A job as it travels in the task message (its only argument).

    Unknown fields are ignored, so a worker of the previous release takes the jobs of
    a newer API during a rolling upgrade."""

    model_config = ConfigDict(extra="ignore")

    meta: JobMeta = JobMeta()
    content: str | None = None  # generate
    messages: list[Message] | None = None  # chat
    route: str | None = None  # the registry's name of the model (several models); None: INNER_LLM_URL's
    stream: bool = False  # relay the answer piece by piece (`Keys.stream`)
    accepted_at: float | None = None  # the API's clock when it queued the job (not part of its fingerprint)
    # The channel of the API process awaiting the job (`Keys.replies`), also kept in its
    # claim; carried here too, so the result still reaches that process when Redis lost
    # the claim (a restart without persistence). Not part of its fingerprint.
    reply_to: str | None = None
    # An OpenAI request (/v1/chat/completions, /v1/completions) as the client sent it,
    # passed to the model server as is: its messages (every role, content parts, tool
    # calls) or prompt, and the fields the gateway does not map itself (tools,
    # tool_choice, response_format, logprobs, the server's own extensions, ...). `meta`
    # still gives the model, temperature, max_tokens, stop and the sampling parameters.
    openai: dict[str, Any] | None = None
    batch: BatchLine | None = None  # a line of a batch (POST /v1/batches)
    # Submitted without waiting, with webhooks for jobs configured: its worker sends
    # job.succeeded or job.failed once its result is stored. Not part of its fingerprint.
    notify: bool = False
    # The tenant it is run for (gateway/tenants.py): its usage and tokens are counted
    # to it. Not part of its fingerprint.
    tenant: str | None = None

    @classmethod
    def parse(cls, raw: Any) -> Job:
        """The job in a task message; `InvalidJob` naming what is wrong."""
        if not isinstance(raw, dict):
            raise InvalidJob("a job is a JSON object")
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            field, *within = [str(part) for part in first["loc"]]
            detail = f"{'.'.join(within)}: {first['msg']}" if within else first["msg"]
            raise InvalidJob(f"invalid '{field}': {detail}") from None

    def prompt(self, task: TaskName) -> list[dict[str, Any]]:
        """The messages to send the model server for `task` (none for a raw completion)."""
        if self.openai is not None:
            messages = self.openai.get("messages")
            if task == TaskName.COMPLETE:
                if not isinstance(self.openai.get("prompt"), (str, list)):
                    raise InvalidJob("a raw completion needs 'openai.prompt': a string or a list of strings")
                return []
            if not isinstance(messages, list) or not messages:
                raise InvalidJob("an OpenAI chat job needs 'openai.messages': a non-empty list")
            return messages
        if task == TaskName.GENERATE:
            if self.content is None:
                raise InvalidJob("a generate job needs 'content' (a string)")
            return [{"role": "user", "content": self.content}]
        if not self.messages:
            raise InvalidJob("a chat job needs 'messages': a non-empty list of {role, content} strings")
        return [{"role": m.role, "content": m.content} for m in self.messages]


# The failures a job ends with. A worker raises them; Celery stores the class name
# (``exc_type``) and the arguments (``exc_message``) as the job's result, and the API
# answers each with its status.


class JobFailure(Exception):
    """A job that could not be answered; the message says why."""

    status: ClassVar[int] = 500
    kept: ClassVar[bool] = True  # kept as a dead letter, to replay

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message, status_code)
        self.message = message
        self.status_code = status_code

    def __str__(self) -> str:
        return self.message


class InvalidJob(JobFailure):
    """The job's payload is not what the contract says."""

    status = 422


class ModelServerError(JobFailure):
    """The model server could not answer."""

    status = 502


class ModelServerUnavailable(ModelServerError):
    """The model server could not be reached (refused, reset, DNS), even after retries."""


class ModelServerFailed(ModelServerError):
    """The model server answered with a server error or an unreadable answer, even after retries."""


class ModelServerTimeout(ModelServerError):
    """The model server did not answer in time, even after retries."""

    status = 504


class ModelServerRejected(ModelServerError):
    """The model server refused the request (unknown model, bad parameter): its 4xx is
    passed on, and retrying or replaying cannot help."""

    status = 400
    kept = False


FAILURES: dict[str, type[JobFailure]] = {
    cls.__name__: cls
    for cls in (InvalidJob, ModelServerUnavailable, ModelServerFailed, ModelServerTimeout, ModelServerRejected)
}


def failure_status(exc_type: str, exc_args: list[Any]) -> tuple[int, str]:
    """The HTTP status and message for a job that failed with `exc_type(*exc_args)`
    (as Celery stores it); 500 for a failure the contract does not name."""
    message = str(exc_args[0]) if exc_args else exc_type
    failure = FAILURES.get(exc_type)
    if failure is None:
        return 500, f"job failed: {exc_type}: {message}"
    passed_on = exc_args[1] if len(exc_args) > 1 else None
    if failure is ModelServerRejected and isinstance(passed_on, int) and 400 <= passed_on < 500:
        return passed_on, message
    return failure.status, message


def is_kept(exc_type: str) -> bool:
    """Whether a job failed with `exc_type` is kept as a dead letter (not the caller's own error)."""
    failure = FAILURES.get(exc_type)
    return failure is None or failure.kept


# Results, as stored under `Keys.result` (Celery's result backend format).


class State(StrEnum):
    """A stored result's ``status``."""

    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    REVOKED = "REVOKED"  # cancelled


FINISHED = frozenset(State)
# What GET /jobs/{id} calls each.
STATUS_NAMES = {State.SUCCESS: "succeeded", State.FAILURE: "failed", State.REVOKED: "cancelled"}


def cancelled_result(job_id: str, now: float) -> str:
    """The result DELETE /jobs/{id} stores for a cancelled job, as Celery would store it."""
    meta = {
        "status": State.REVOKED.value,
        "result": {"exc_type": "TaskRevokedError", "exc_message": ["cancelled"], "exc_module": "celery.exceptions"},
        "traceback": None,
        "children": [],
        "date_done": datetime.fromtimestamp(now, UTC).isoformat(),
        "task_id": job_id,
    }
    return json.dumps(meta)


# A streamed answer: one stream entry per piece, then one last entry.
STREAM_INDEX = "i"  # the choice the piece belongs to
STREAM_TEXT = "t"  # the piece's text
STREAM_EXTRA = "x"  # JSON, when the piece brought more: {"tool_calls": [...], "logprobs": {...}}
STREAM_END = "end"  # JSON: the whole answer, as the task returns it


# Redis.


class JobField(StrEnum):
    """The fields of a job's hash (`Keys.job`)."""

    FINGERPRINT = "fingerprint"  # of the request that claimed the job_id
    TASK = "task"
    ACCEPTED_AT = "accepted_at"  # seconds since the epoch, as text
    STARTED_AT = "started_at"  # set by the worker that starts it
    CANCELLED_AT = "cancelled_at"
    REPLY_TO = "reply_to"  # the channel of the API process awaiting it
    NOTIFY = "notify"  # set when its end is sent to webhooks (job.cancelled is sent by the API)
    TENANT = "tenant"  # the tenant it is run for
    QUEUE = "queue"  # its model's queue (the age of the oldest job waiting for a model, GET /scaling)


class Keys:
    """Every Redis key and channel of one deployment, all under ``REDIS_PREFIX:``."""

    RESULT_PREFIX = "celery-task-meta-"  # Celery's result backend's

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix  # with its trailing ':'

    def result(self, job_id: str) -> str:
        """A job's result (and the pub/sub channel it is published on)."""
        return f"{self.prefix}{self.RESULT_PREFIX}{job_id}"

    def job(self, job_id: str) -> str:
        """The hash of a job's claim (`JobField`)."""
        return f"{self.prefix}job:{job_id}"

    @property
    def queued(self) -> str:
        """The sorted set of accepted jobs not yet started, by time accepted."""
        return f"{self.prefix}queued"

    def stream(self, job_id: str) -> str:
        """The stream a streamed job's answer is relayed through, piece by piece."""
        return f"{self.prefix}stream:{job_id}"

    @property
    def cancel(self) -> str:
        """The pub/sub channel cancellations are announced on (job ids)."""
        return f"{self.prefix}cancel"

    def replies(self, process: str) -> str:
        """The pub/sub channel one API process receives its jobs' results on."""
        return f"{self.prefix}replies:{process}"

    def lease(self, job_id: str) -> str:
        """The key that exists while a live worker runs the job (renewed, with a TTL)."""
        return f"{self.prefix}lease:{job_id}"

    def rate(self, who: str, window: int) -> str:
        """The count of one client's requests in one minute."""
        return f"{self.prefix}rate:{who}:{window}"

    def in_flight(self, tenant: str) -> str:
        """A sorted set of a tenant's jobs accepted and maybe not answered (by time accepted)."""
        return f"{self.prefix}in-flight:{tenant}"

    def tokens(self, tenant: str, span: str, window: int) -> str:
        """The tokens a tenant's jobs used in one minute (`span` "m") or UTC day ("d")."""
        return f"{self.prefix}tokens:{tenant}:{span}{window}"

    def usage(self, day: str) -> str:
        """A hash of one UTC day's usage (YYYY-MM-DD): "{tenant}|{model}|{count}" -> n."""
        return f"{self.prefix}usage:{day}"

    def fair_lock(self, queue: str) -> str:
        """Held (with a TTL, renewed) by the API process dispatching the queue's jobs by tenant."""
        return f"{self.prefix}fair-lock:{queue}"

    def contended(self, queue: str) -> str:
        """Set (with a TTL, renewed) while the queue's jobs wait in their tenants' queues."""
        return f"{self.prefix}fair:{queue}"

    def batch_lock(self, batch_id: str) -> str:
        """Held (with a TTL, renewed) by the API process driving the batch."""
        return f"{self.prefix}batch-lock:{batch_id}"

    @property
    def capacity(self) -> str:
        """A hash of each worker's slots, by "{queue}|{worker}" (tasks/capacity.py): JSON
        of its slots, busy slots, jobs running and messages held, and when it said so."""
        return f"{self.prefix}capacity"

    @property
    def webhook_counts(self) -> str:
        """A hash of webhook deliveries by endpoint and outcome ("{name}|delivered", ...)."""
        return f"{self.prefix}webhook-counts"

    @property
    def unacked(self) -> str:
        """Kombu's Redis transport's hash of unacknowledged messages, by delivery tag
        (a Redis broker only): a message a worker holds, running or reserved."""
        return f"{self.prefix}unacked"

    @property
    def unacked_index(self) -> str:
        """Kombu's Redis transport's sorted set of unacknowledged messages (a Redis
        broker only): workers renew their messages' scores in it."""
        return f"{self.prefix}unacked_index"


# The scripts. Each job moves through them: CLAIM (API) -> MARK_STARTED (worker) ->
# STORE_ONCE (worker); or CANCEL (API) at any point before its result.

# Publishes a result on the job's channel (requests that follow the job), on its
# claim's reply_to (the API process that queued it) and on the reply_to its task
# message carries (the same process, unless Redis lost the claim: then the message's
# is the only one left).
_PUBLISH_RESULT = """
local function publish_result(result_key, job_key, result, carried)
  redis.call('PUBLISH', result_key, result)
  local claimed = redis.call('HGET', job_key, 'reply_to')
  if claimed then redis.call('PUBLISH', claimed, result) end
  if carried and carried ~= '' and carried ~= claimed then redis.call('PUBLISH', carried, result) end
end
"""

# Claims job_id for this request unless it is claimed already; returns the
# fingerprint of the request that claimed it first, or nil when this one did; or
# {'full', n} when n jobs wait to start already (ARGV[6], MAX_QUEUED_JOBS): the
# claim is refused. Entries older than a claim's TTL are dropped from the count.
# ARGV[7], when not empty, is the channel the job's result is also published on.
# ARGV[8], when given and not empty, is the tenant it is run for; ARGV[9] its model's queue.
# KEYS: job hash, queued set. ARGV: fingerprint, task, now, job TTL, job id, max queued, reply_to, tenant, queue.
CLAIM = """
local existing = redis.call('HGET', KEYS[1], 'fingerprint')
if existing then return existing end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(ARGV[3]) - tonumber(ARGV[4]))
local waiting = redis.call('ZCARD', KEYS[2])
if waiting >= tonumber(ARGV[6]) then return {'full', waiting} end
redis.call('HSET', KEYS[1], 'fingerprint', ARGV[1], 'task', ARGV[2], 'accepted_at', ARGV[3])
if ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'reply_to', ARGV[7]) end
if ARGV[8] and ARGV[8] ~= '' then redis.call('HSET', KEYS[1], 'tenant', ARGV[8]) end
if ARGV[9] and ARGV[9] ~= '' then redis.call('HSET', KEYS[1], 'queue', ARGV[9]) end
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return false
"""

# As a job starts. KEYS: job hash, queued set, result, lease. ARGV: now, job TTL,
# job id, lease seconds, this worker's name, the message's reply_to (or ''). Answers:
#   'cancelled'  cancelled while it was queued
#   'answered'   it has a result already: published again, for a request that
#                queued it anew (one whose first publish seemed to fail, yet reached
#                the broker and ran)
#   'running'    another live worker holds its lease
#   'start'      it may run: leased to this worker, marked started, no longer queued
MARK_STARTED = (
    _PUBLISH_RESULT
    + """
if redis.call('HEXISTS', KEYS[1], 'cancelled_at') == 1 then return 'cancelled' end
local result = redis.call('GET', KEYS[3])
if result then
  redis.call('ZREM', KEYS[2], ARGV[3])
  publish_result(KEYS[3], KEYS[1], result, ARGV[6])
  return 'answered'
end
if not redis.call('SET', KEYS[4], ARGV[5], 'NX', 'EX', ARGV[4]) then return 'running' end
redis.call('HSET', KEYS[1], 'started_at', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[3])
return 'start'
"""
)

# Stores and publishes the result ARGV[1] for ARGV[2] seconds unless a result is
# stored already; answers 1 when it stored, 0 when it kept the earlier result.
# The result stored is counted to its tenant (in the same call: a job's first
# result once, and no round trip more): KEYS[3..5] and ARGV[4..8] when given.
# KEYS: result, job hash; the day's usage, the tenant's tokens of the minute and of
# the day. ARGV: result, seconds, the message's reply_to (or ''); the usage fields'
# prefix ("{tenant}|{model}|"), the count ("jobs" or "failed"), prompt tokens,
# completion tokens, seconds the usage is kept.
STORE_ONCE = (
    _PUBLISH_RESULT
    + """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return 0 end
publish_result(KEYS[1], KEYS[2], ARGV[1], ARGV[3])
if #KEYS >= 5 then
  local prompt, completion = tonumber(ARGV[6]), tonumber(ARGV[7])
  redis.call('HINCRBY', KEYS[3], ARGV[4] .. ARGV[5], 1)
  if prompt + completion > 0 then
    redis.call('HINCRBY', KEYS[3], ARGV[4] .. 'prompt_tokens', prompt)
    redis.call('HINCRBY', KEYS[3], ARGV[4] .. 'completion_tokens', completion)
    if redis.call('INCRBY', KEYS[4], prompt + completion) == prompt + completion then
      redis.call('EXPIRE', KEYS[4], 120)
    end
    if redis.call('INCRBY', KEYS[5], prompt + completion) == prompt + completion then
      redis.call('EXPIRE', KEYS[5], 172800)
    end
  end
  if redis.call('TTL', KEYS[3]) < 0 then redis.call('EXPIRE', KEYS[3], ARGV[8]) end
end
return 1
"""
)

# Admits a tenant's job under its quotas, before its claim: refused ({quota, n})
# when the tokens its jobs used this minute or this UTC day reached a quota, or when
# it has as many jobs in flight as it may. Its jobs in flight are a sorted set of
# the ids admitted; one whose result is stored (answered, failed, cancelled), or older
# than a job's TTL, is no longer in flight, and is dropped when the set is full (so
# nothing need take a job out as it ends). A quota of 0 is none.
# KEYS: in-flight set, tokens of the minute, tokens of the day.
# ARGV: job id, now, jobs in flight, tokens per minute, tokens per day, the result
#       keys' prefix (`Keys.result` of ''), job TTL.
ADMIT = """
local function over(key, quota)
  local used = tonumber(redis.call('GET', key) or '0')
  return quota > 0 and used >= quota, used
end
local full, used = over(KEYS[2], tonumber(ARGV[4]))
if full then return {'tokens_per_minute', used} end
full, used = over(KEYS[3], tonumber(ARGV[5]))
if full then return {'tokens_per_day', used} end
local limit = tonumber(ARGV[3])
if limit == 0 or redis.call('ZSCORE', KEYS[1], ARGV[1]) then return false end
local now = tonumber(ARGV[2])
if redis.call('ZCARD', KEYS[1]) >= limit then
  for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    if redis.call('EXISTS', ARGV[6] .. id) == 1 then redis.call('ZREM', KEYS[1], id) end
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[7]))
  local count = redis.call('ZCARD', KEYS[1])
  if count >= limit then return {'jobs_in_flight', count} end
end
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[7])
return false
"""

# Cancels a job unless it has a result already: marks it, takes it out of the
# queued set, stores and publishes its cancelled result (waiting requests get their
# answer at once), and names it on the cancel channel (so a worker running it
# stops). Answers "unknown", "finished" or "cancelled".
# KEYS: job hash, queued set, result, cancel channel. ARGV: now, job TTL, job id,
# the cancelled result, result TTL.
CANCEL = (
    _PUBLISH_RESULT
    + """
if redis.call('EXISTS', KEYS[3]) == 1 then return 'finished' end
if redis.call('EXISTS', KEYS[1]) == 0 then return 'unknown' end
redis.call('HSET', KEYS[1], 'cancelled_at', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[3])
redis.call('SET', KEYS[3], ARGV[4], 'EX', ARGV[5])
publish_result(KEYS[3], KEYS[1], ARGV[4], '')
redis.call('PUBLISH', KEYS[4], ARGV[3])
return 'cancelled'
"""
)
