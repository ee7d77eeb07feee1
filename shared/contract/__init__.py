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
import this package, so a change of contract is a change here. The key layout is in
`keys.py`, and every Lua script that runs on those keys (the job's, the tenants'
quotas and rate limits, the fair-share and batch locks) beside it in `scripts.py`;
both are named from this package as well.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar

import msgspec

# The tasks.


class TaskName(StrEnum):
    """The Celery task names: the API sends by name, the workers register these."""

    GENERATE = "llm.generate"  # complete `content`
    CHAT = "llm.chat"  # continue `messages` (or the OpenAI request in `openai`)
    COMPLETE = "llm.complete"  # a raw completion of the OpenAI request in `openai` (no chat template)
    EMBED = "llm.embed"  # embed the inputs in `embed` (the model server's /v1/embeddings)
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


class JobMeta(msgspec.Struct, omit_defaults=True):
    """How to generate: the spec's ``meta``, plus what the OpenAI endpoints add."""

    temperature: float = 0.2
    # The request set no temperature (an OpenAI request may leave it out): the model
    # server's own default applies, and none is sent. `temperature` is still given (OpenAI's
    # default, 1.0), for a worker of the previous release, which ignores this and sends it.
    temperature_unset: bool = False
    tokens_limit: int | None = None  # None: the model server's own limit
    stop_words: list[str] = []
    model: str | None = None  # the name the model server serves it by
    priority: int | None = None  # 0 (batch) .. 9 (most urgent)
    sampling: dict[str, Any] = {}  # of SAMPLING only

    def __post_init__(self) -> None:
        if not set(self.sampling) <= SAMPLING:
            raise ValueError(f"'sampling' takes only {', '.join(sorted(SAMPLING))}")
        if any(value is None for value in self.sampling.values()):
            self.sampling = {key: value for key, value in self.sampling.items() if value is not None}


class Message(msgspec.Struct):
    """One turn of a conversation, as the model server gets it."""

    role: str
    content: str


class BatchLine(msgspec.Struct):
    """Which line of which batch a job is (shared/storage/batch_files.py): its worker keeps
    the line's answer or failure in the file store."""

    id: str
    line: int


class Job(msgspec.Struct, omit_defaults=True):
    """A job as it travels in the task message (its only argument): built by the API
    (`Job.parse` of what a route assembled), sent as `Job.wire`, read back by the worker
    with `Job.parse`. A typed struct (msgspec): parsing and checking one is a few
    microseconds, and the fields a job leaves at their defaults are not sent.

    Unknown fields are ignored, so a worker of the previous release takes the jobs of
    a newer API during a rolling upgrade."""

    meta: JobMeta = msgspec.field(default_factory=JobMeta)
    content: str | None = None  # generate
    messages: list[Message] | None = None  # chat
    route: str | None = None  # the registry's name of the model (several models); None: INNER_LLM_URL's
    # The models (the registry's names) it may fall back to, in turn, as the request
    # named them (`fallbacks`; [] for none); None: its model's (shared/registry.py).
    fallbacks: list[str] | None = None
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
    # A /v1/responses response: its end is sent to webhooks as response.* events (with
    # `notify`), its object id the response's.
    response: bool = False
    # A response's record (api/openai/responses/store.py), written again by the worker when
    # Redis lost it. Not part of its fingerprint.
    record: dict[str, Any] | None = None
    # A /v1/messages request as its client sent it (Anthropic's body, without its model and
    # stream), carried beside its translation (`openai`) when its model's server serves
    # /v1/messages itself (the registry's `messages_api`): sent there as given.
    anthropic: dict[str, Any] | None = None
    # An embedding job (llm.embed): {"input": [strings] or [[token ids]], "dimensions",
    # "user"}; its answer {"embeddings": [base64 of little-endian float32], "usage", "model"}.
    embed: dict[str, Any] | None = None
    # The tenant it is run for (shared/tenants.py): its usage and tokens are counted
    # to it. Not part of its fingerprint.
    tenant: str | None = None
    # Its tenant's weight, where not 1: its share of a busy model's server slots while
    # several tenants' jobs wait for one (tasks/model/servers.py). Not part of its fingerprint.
    weight: Annotated[float, msgspec.Meta(gt=0)] | None = None
    # The id of the API key it was sent with, where its key has one (a project's key,
    # ``key_…``): its usage is counted to that key (the Administration API's usage by
    # api_key_id, a key's last_used_at). Not part of its fingerprint.
    key_id: str | None = None

    @classmethod
    def parse(cls, raw: Any) -> Job:
        """The job in a task message; `InvalidJob` naming what is wrong."""
        if not isinstance(raw, dict):
            raise InvalidJob("a job is a JSON object")
        try:
            return msgspec.convert(raw, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise InvalidJob(_invalid(str(exc))) from None

    def wire(self) -> dict[str, Any]:
        """The job as its task message carries it: plain JSON types, defaults left out."""
        return msgspec.to_builtins(self)

    def embed_inputs(self) -> list[str] | list[list[int]]:
        """An embedding job's inputs: strings, or lists of token ids (not mixed)."""
        given = (self.embed or {}).get("input")
        if isinstance(given, list) and given and all(isinstance(i, str) for i in given):
            return given
        if (
            isinstance(given, list)
            and given
            and all(isinstance(i, list) and i and all(isinstance(t, int) for t in i) for i in given)
        ):
            return given
        raise InvalidJob("an embedding job needs 'embed.input': a non-empty list of strings, or of token id lists")

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


# "Expected `float`, got `str` - at `$.meta.temperature`": msgspec's account of a
# field that is wrong, and where.
_WHERE = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_MISSING = re.compile(r"^Object missing required field `(?P<name>[^`]+)`$")


def _invalid(message: str) -> str:
    """msgspec's validation message as the contract words it: "invalid 'meta': temperature:
    Expected `float`, got `str`"."""
    found = _WHERE.match(message)
    what, path = (found["what"], found["path"] or "") if found else (message, "")
    parts = [part for part in re.split(r"[.\[\]]", path) if part]
    if missing := _MISSING.match(what):
        parts.append(missing["name"])
        what = "Field required"
    if not parts:
        return what
    field, *within = parts
    return f"invalid '{field}': {'.'.join(within)}: {what}" if within else f"invalid '{field}': {what}"


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


# The parts a failure the contract does not name may come from, by its module's package.
PARTS = {"redis": "the result store (Redis)", "kombu": "the broker", "amqp": "the broker", "celery": "the worker"}


def failure_status(exc_type: str, exc_args: list[Any], module: str = "") -> tuple[int, str]:
    """The HTTP status and message for a job that failed with `exc_type(*exc_args)` from
    `module` (as Celery stores it); 500 for a failure the contract does not name, whose
    message says which part failed but not its text (an address, a path: the worker's
    log has it)."""
    message = str(exc_args[0]) if exc_args else exc_type
    failure = FAILURES.get(exc_type)
    if failure is None:
        part = PARTS.get(module.partition(".")[0], "the worker")
        return 500, f"job failed: {exc_type} from {part} (the worker's log has the detail)"
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


class JobStatus(StrEnum):
    """A job's status, as GET /jobs/{id} names it (a response's, api/openai/responses/objects.py)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """Whether it has its result (an answer, a failure or a cancellation)."""
        return self not in (JobStatus.QUEUED, JobStatus.RUNNING)


# What GET /jobs/{id} calls each stored result's state.
STATUS_NAMES = {State.SUCCESS: JobStatus.SUCCEEDED, State.FAILURE: JobStatus.FAILED, State.REVOKED: JobStatus.CANCELLED}


class CancelOutcome(StrEnum):
    """What the CANCEL script answers a cancellation (DELETE /jobs/{id}, a stream's reader
    leaving, a response's cancel)."""

    CANCELLED = "cancelled"  # cancelled now (queued or running), or it was already
    FINISHED = "finished"  # it has its result: too late to cancel
    UNKNOWN = "unknown"  # no such job (never claimed, or expired)


class Start(StrEnum):
    """What MARK_STARTED answers a worker about to run a job."""

    START = "start"  # it may run: leased to this worker, marked started, no longer queued
    CANCELLED = "cancelled"  # cancelled while it was queued
    ANSWERED = "answered"  # it has a result already (published again)
    RUNNING = "running"  # another live worker holds its lease


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


# An answer's first choice, repeated at its top (`content`, `finish_reason`, as the spec's
# endpoints use it), is stored once: in its choice.
_FIRST_CHOICE = ("content", "finish_reason")


def stored_answer(answer: Any) -> Any:
    """An answer as its result stores it: without what repeats its first choice."""
    choices = answer.get("choices") if isinstance(answer, dict) else None
    if not choices or not isinstance(choices[0], dict):
        return answer
    first = choices[0]
    repeated = [name for name in _FIRST_CHOICE if name in answer and answer[name] == first.get(name)]
    return {name: value for name, value in answer.items() if name not in repeated} if repeated else answer


def whole_answer(answer: Any) -> Any:
    """A stored answer as the task returned it (`stored_answer` undone)."""
    choices = answer.get("choices") if isinstance(answer, dict) else None
    if not choices or not isinstance(choices[0], dict) or all(name in answer for name in _FIRST_CHOICE):
        return answer
    return {**{name: choices[0].get(name) for name in _FIRST_CHOICE}, **answer}


# What an answer tells the request awaiting it of its run (its times, tasks/llm.py: that
# request's Server-Timing and metrics): published with its result, not kept in it. A
# request that reads the result later was not that run.
RUN_ONLY = ("timing",)


def kept_answer(answer: Any) -> Any:
    """An answer as its result keeps it for RESULT_TTL: as `stored_answer` has it, and
    without what only the request awaiting it reads (RUN_ONLY)."""
    stored = stored_answer(answer)
    if not isinstance(stored, dict) or not any(name in stored for name in RUN_ONLY):
        return stored
    return {name: value for name, value in stored.items() if name not in RUN_ONLY}


# An ended job's claim: what its hash (`Keys.job`) held that GET /jobs/{id} and a
# resubmission of its job_id read (its fingerprint, times, tenant) is kept in its
# result under this name, and the hash goes (STORE_ONCE).
KEPT_CLAIM = "claim"


def kept_claim(meta: Any) -> dict[str, str]:
    """The claim's fields a stored result keeps (`KEPT_CLAIM`), as its hash had them; {}
    for a result without (stored before, or of a job sent without the API's claim)."""
    kept = meta.get(KEPT_CLAIM) if isinstance(meta, dict) else None
    if not isinstance(kept, dict):
        return {}
    return {name: value for name, value in kept.items() if isinstance(value, str)}


# A streamed answer: one stream entry per piece, then one last entry.
STREAM_INDEX = "i"  # the choice the piece belongs to
STREAM_TEXT = "t"  # the piece's text
STREAM_EXTRA = "x"  # JSON, when the piece brought more: {"tool_calls": [...], "logprobs": {...}}
STREAM_END = "end"  # JSON: the whole answer, as the task returns it


# The key layout and the scripts on it, named from the package as well.
from shared.contract.keys import JobField as JobField  # noqa: E402
from shared.contract.keys import Keys as Keys  # noqa: E402
from shared.contract.scripts import ADMIT as ADMIT  # noqa: E402
from shared.contract.scripts import CANCEL as CANCEL  # noqa: E402
from shared.contract.scripts import CLAIM as CLAIM  # noqa: E402
from shared.contract.scripts import MARK_NOTIFIED as MARK_NOTIFIED  # noqa: E402
from shared.contract.scripts import MARK_STARTED as MARK_STARTED  # noqa: E402
from shared.contract.scripts import RELAY_ADD as RELAY_ADD  # noqa: E402
from shared.contract.scripts import STORE_ONCE as STORE_ONCE  # noqa: E402
from shared.contract.scripts import STREAM_JOIN as STREAM_JOIN  # noqa: E402
from shared.contract.scripts import STREAM_LEAVE as STREAM_LEAVE  # noqa: E402
