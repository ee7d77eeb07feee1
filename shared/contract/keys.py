"""The Redis key layout of one deployment (`Keys`) and the fields of a job's hash."""

from __future__ import annotations

import calendar
import time
from enum import Enum, StrEnum


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
    BACKGROUND = "background"  # queued without a request awaiting it: no reader that leaves cancels it
    PRIORITY = "priority"  # 0-9, when it gave one (its queue's waiting jobs by priority band, GET /scaling?bands=true)


class TokenWindow(Enum):
    """A window a tenant's tokens are counted in (`Keys.tokens`): the API admits its jobs
    under its quotas on them (api/tenancy/quotas.py), the workers count each job's
    tokens to them as its result is stored (tasks/result_store.py)."""

    MINUTE = ("m", 60, "minute")  # tokens_per_minute
    DAY = ("d", 86_400, "UTC day")  # tokens_per_day

    def __init__(self, tag: str, seconds: int, said: str) -> None:
        self.tag = tag  # in the key
        self.seconds = seconds
        self.said = said  # in a refusal's message

    def index(self, now: float) -> int:
        """The number of the window `now` is in."""
        return int(now // self.seconds)

    def ends_at(self, now: float) -> float:
        """When the window `now` is in ends."""
        return (self.index(now) + 1) * self.seconds


def usage_day(now: float) -> str:
    """The UTC day of `now` as `Keys.usage` names it (YYYY-MM-DD)."""
    return time.strftime("%Y-%m-%d", time.gmtime(now))


def usage_month(now: float) -> tuple[str, int, int]:
    """The UTC month of `now`: as `Keys.spend` names it (YYYY-MM), and when it starts and
    ends (Unix seconds), what a project's spend limit is counted over."""
    year, month = time.gmtime(now)[:2]
    following = (year + 1, 1) if month == 12 else (year, month + 1)
    start = calendar.timegm((year, month, 1, 0, 0, 0))
    end = calendar.timegm((*following, 1, 0, 0, 0))
    return f"{year:04d}-{month:02d}", start, end


# Nano-USD (what costs are counted in) in a cent (what spend limits are set in).
NANO_PER_CENT = 10_000_000
# A project's spend of a month (`Keys.spend`) is kept this long past the month's end: a
# job accepted in it and finishing then still finds it.
SPEND_KEPT_AFTER_MONTH = 86_400


# A minute's usage is kept two hours: the last hour whole, whichever minute it is read in.
USAGE_MINUTES = 60  # the minutes GET /usage?per=minute answers, the current one last
USAGE_MINUTE_SECONDS = 7200


def usage_minute(now: float) -> str:
    """The UTC minute of `now` as `Keys.usage_minute` names it (YYYY-MM-DDTHH:MMZ, ISO 8601)."""
    return time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime(now))


def usage_prefix(tenant: str, model: str) -> str:
    """The start of a usage hash's fields of one tenant and model; the count's name ends them."""
    return f"{tenant}|{model}|"


def model_use_prefix(model: str) -> str:
    """The start of a `Keys.model_use` hash's fields of one model; the count's name ends them
    ("requests", "tokens", "batch_input_tokens")."""
    return f"{model}|"


def usage_field(field: str) -> tuple[str, str, str]:
    """The tenant, model and count's name of a usage hash's field (a model's name may hold "|")."""
    tenant, _, rest = field.partition("|")
    model, _, count = rest.rpartition("|")
    return tenant, model, count


# Usage by bucket (the Administration API's usage and costs): one hash per UTC minute
# (`Keys.usage_buckets`), counted by the workers with each job's result, moved into the
# control plane's `usage_buckets` table soon after the minute ends (api/admin/usage_flush.py)
# and kept here two hours, so history survives Redis coming back empty but for a minute.
USAGE_BUCKET_SECONDS = 7200
USAGE_BUCKET_COUNTS = ("requests", "input", "cached", "output", "cost")  # cost: nano-USD


def usage_bucket_prefix(tenant: str, key_id: str, batch: bool, kind: str, model: str) -> str:
    """The start of a `Keys.usage_buckets` hash's fields of one tenant (project), API key
    id ("" for a key without one), batch or not, kind (completions, embeddings) and model;
    a count of `USAGE_BUCKET_COUNTS` ends them."""
    return f"{tenant}|{key_id}|{'1' if batch else '0'}|{kind}|{model}|"


def usage_bucket_field(field: str) -> tuple[str, str, bool, str, str, str]:
    """The tenant, key id, batch, kind, model and count of a `Keys.usage_buckets` field (a
    model's name may hold "|"; the others never do)."""
    tenant, key_id, batch, kind, rest = field.split("|", 4)
    model, _, count = rest.rpartition("|")
    return tenant, key_id, batch == "1", kind, model, count


def capacity_field(queue: str, worker: str) -> str:
    """A worker's field of `Keys.capacity` for one queue it consumes."""
    return f"{queue}|{worker}"


def capacity_queue(field: str) -> str:
    """The queue of a `Keys.capacity` field."""
    return field.rpartition("|")[0]


def webhook_count_field(endpoint: str, outcome: str) -> str:
    """A field of `Keys.webhook_counts`: an endpoint's deliveries of one outcome."""
    return f"{endpoint}|{outcome}"


def webhook_count_of(field: str) -> tuple[str, str]:
    """The endpoint and outcome of a `Keys.webhook_counts` field."""
    endpoint, _, outcome = field.rpartition("|")
    return endpoint, outcome


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

    def stream_readers(self, job_id: str) -> str:
        """How many clients read the job's stream now, across API processes."""
        return f"{self.prefix}readers:{job_id}"

    def response(self, job_id: str) -> str:
        """A /v1/responses response's record: its request, the conversation it continues."""
        return f"{self.prefix}response:{job_id}"

    @property
    def cancel(self) -> str:
        """The pub/sub channel cancellations are announced on (job ids)."""
        return f"{self.prefix}cancel"

    @property
    def control_changed(self) -> str:
        """The pub/sub channel the control plane's changes are announced on (its new
        version): each API process then reloads its projects and keys (api/tenancy/control_sync.py)."""
        return f"{self.prefix}control-changed"

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

    def streams(self, tenant: str) -> str:
        """A sorted set of the streams a tenant's clients read now, across API processes:
        one token per reader, by when it lapses unless its API process renews it (ms)."""
        return f"{self.prefix}streams:{tenant}"

    def tokens(self, tenant: str, window: TokenWindow, now: float) -> str:
        """The tokens a tenant's jobs used in the `window` (its minute or UTC day) of `now`."""
        return f"{self.prefix}tokens:{tenant}:{window.tag}{window.index(now)}"

    def token_windows(self, tenant: str, now: float) -> list[str]:
        """The tenant's tokens of the minute and of the UTC day of `now`, in that order (the
        scripts ADMIT and STORE_ONCE take them so)."""
        return [self.tokens(tenant, TokenWindow.MINUTE, now), self.tokens(tenant, TokenWindow.DAY, now)]

    def model_use(self, tenant: str, window: TokenWindow, now: float) -> str:
        """A hash of what a tenant used of each model in the `window` (its minute or UTC day)
        of `now`, by "{model}|{count}" (`model_use_prefix`): its requests admitted (both
        windows), its tokens (the minute's; counted by the workers as its jobs' results are
        stored, not a batch's) and its batches' input tokens (the day's). Its rate limits
        per model are checked on them (api/tenancy/quotas.py, the batch keeper)."""
        return f"{self.prefix}model-use:{tenant}:{window.tag}{window.index(now)}"

    def model_use_windows(self, tenant: str, now: float) -> list[str]:
        """The tenant's `model_use` of the minute and of the UTC day of `now`, in that order."""
        return [self.model_use(tenant, TokenWindow.MINUTE, now), self.model_use(tenant, TokenWindow.DAY, now)]

    def spend(self, project: str, month: str) -> str:
        """What a project spent in one UTC month (`usage_month`), nano-USD: made by the API
        as it admits a job of a project with a spend limit (from the usage history when
        Redis lost it), added to by the workers as they store a result (only once made)."""
        return f"{self.prefix}spend:{project}:{month}"

    def usage(self, day: str) -> str:
        """A hash of one UTC day's usage (`usage_day`): "{tenant}|{model}|{count}" -> n
        (`usage_prefix`, `usage_field`)."""
        return f"{self.prefix}usage:{day}"

    def usage_of_minute(self, minute: str) -> str:
        """A hash of one UTC minute's usage (`usage_minute`), its fields as `usage`'s; kept
        `USAGE_MINUTE_SECONDS`."""
        return f"{self.prefix}usage-minute:{minute}"

    def usage_buckets(self, minute: int) -> str:
        """A hash of one minute's usage by bucket (`minute`: Unix seconds // 60):
        `usage_bucket_prefix` + count -> n, kept `USAGE_BUCKET_SECONDS`."""
        return f"{self.prefix}usage-buckets:{minute}"

    @property
    def usage_flushed(self) -> str:
        """The last minute (Unix seconds // 60) whose `usage_buckets` hash is in the control
        plane's database (api/admin/usage_flush.py)."""
        return f"{self.prefix}usage-flushed"

    @property
    def usage_flush_lock(self) -> str:
        """Held (with a TTL) by the API process moving finished minutes into the database."""
        return f"{self.prefix}usage-flush-lock"

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

    def servers(self, model: str) -> str:
        """A hash of the state of a model's servers (tasks/model/servers.py): by
        "{server}|{field}", slots, free, state (up, down), fails (in a row), jobs,
        failures, since, why, probe_at, probe_wait; and the model's down_since."""
        return f"{self.prefix}servers:{model}"

    def server_holds(self, model: str) -> str:
        """A hash of the slots of a model's servers that jobs hold: by hold id,
        "{server}|{expires ms}|{worker}"."""
        return f"{self.prefix}servers:{model}:holds"

    def server_waiting(self, model: str) -> str:
        """A sorted set of the jobs waiting for a slot of a model's servers, by priority,
        then the time they were accepted: one tenant's order; with several tenants
        waiting, they take turns by weight (`server_turns`)."""
        return f"{self.prefix}servers:{model}:waiting"

    def server_tenant_waiting(self, model: str, tenant: str) -> str:
        """A sorted set of one tenant's jobs of `server_waiting` (the same scores): the
        tenants' lines, merged by their turns (`server_turns`). The scripts name it as
        `server_waiting` + ":" + tenant."""
        return f"{self.server_waiting(model)}:{tenant}"

    def server_turns(self, model: str) -> str:
        """A hash of the tenants' turns at a model's free slots: each tenant's weight
        ("w|{tenant}") and virtual time ("vt|{tenant}"), and the virtual time of the last
        turn taken ("now")."""
        return f"{self.prefix}servers:{model}:turns"

    def server_beats(self, model: str) -> str:
        """A hash of when each waiter of `server_waiting` stops counting (ms) unless it waits on."""
        return f"{self.prefix}servers:{model}:beats"

    def server_wake_prefix(self, model: str) -> str:
        """Where a waiter is woken (a list under this prefix and its id) when a slot is free."""
        return f"{self.prefix}servers:{model}:wake:"

    def affinity(self, model: str, tenant: str, prefix_hash: str) -> str:
        """The server of a model that last served a tenant's prompt prefix (a TTL): each
        tenant's own, so no tenant's job follows (and times) another's prompt cache."""
        return f"{self.prefix}affinity:{model}:{tenant}:{prefix_hash}"
