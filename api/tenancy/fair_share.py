"""Fair sharing of a model's workers between tenants, by weight, across every API process.

While a model's queue is short, jobs are published to it directly, as with one tenant.
Once it holds ``FAIR_SHARE_AHEAD`` jobs or more (the workers are all busy and jobs
wait), the model is *contended*: new jobs go to their tenant's own queue of that model
(``{queue}.tenant.{name}``, durable, with the same priorities: on quorum queues, the
same three priority bands, shared/broker/queues.py), and one dispatcher per
model moves them into the model's queue, keeping it about ``FAIR_SHARE_AHEAD`` deep:

- the next job moved is the one of highest priority among the tenants' next jobs, and
  among those of that priority, the tenant's whose virtual time is least (start-time
  fair queuing: a job moved adds 1/weight to its tenant's; a tenant that starts
  waiting starts at the virtual time of the last job moved). Priority comes first; the
  weights share each priority's turns.
- A job is moved by publishing it to the model's queue (confirmed on RabbitMQ), then
  acknowledging it in its tenant's queue: a dispatcher that dies between the two leaves
  a second message of the job, which the workers answer once (tasks/running.py).
- Each API process may be the dispatcher of a model: the one holding the model's
  Redis lock (``fair-lock:{queue}``, renewed). A dead one's lock lapses within
  `LOCK_SECONDS`, and another process takes over; the jobs it held go back to their
  queues (RabbitMQ on the channel's close; the Redis broker after its visibility timeout).
- The dispatcher says in Redis (``fair:{queue}``, with a TTL) while the model is
  contended; every API process reads it every `WATCH_SECONDS`.

The tenants are those known now: the keys file's and the active projects made at runtime
through the control plane (shared/tenants.py `Tenants.runtime`, replaced whole as it
changes: api/tenancy/control_sync.py), each with its weight (a project's is 1). Each API
process reads them again within `WATCH_SECONDS` of a change: a new tenant's queues are
added to the API's Celery app (declared as at start) before a job is routed to them, and
each dispatcher takes it into its turns at its next round; a tenant that leaves (a project
archived) keeps its turns until its queues are found empty, so no job of it is stranded.
Fair sharing is on while FAIR_SHARE is and more than one tenant exists.

The cost per job: nothing while the model is not contended. While it is, a job is
published twice and read once more, and waits for the dispatcher's next round (every
`ROUND_SECONDS`) besides the ``FAIR_SHARE_AHEAD`` jobs ahead of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from celery import Celery
from kombu.exceptions import ChannelError
from redis.exceptions import RedisError

from shared.broker.queues import MAX_PRIORITY, band_queue, bands, declared
from shared.config import Config
from shared.contract.scripts import FAIR_LOCK_RENEW
from shared.storage import redis_clients
from shared.tenants import Directory, Tenants

log = logging.getLogger(__name__)

LOCK_SECONDS = 3.0  # a dispatcher's lock lapses this long after its process died
WATCH_SECONDS = 0.02  # how often each API process reads which models are contended
ROUND_SECONDS = 0.005  # between two rounds of a dispatcher of a contended model
IDLE_SECONDS = 0.05  # between two looks at the queue of a model that is not contended
CALM_SECONDS = 1.0  # a model is no longer contended once its tenants' queues were empty this long
HELD_BACK = (b"2", "2")  # the value of `fair:{queue}` while tenants' jobs wait for room
HOLD_SECONDS = 20.0  # a tenant's next job, read and not moved, goes back after this long


TENANT_INFIX = ".tenant."


def tenant_queue(queue: str, tenant: str) -> str:
    """The queue of one tenant's jobs of the model of `queue`, while it is contended."""
    return f"{queue}{TENANT_INFIX}{tenant}"


def weights_of(tenants: Tenants) -> dict[str, float]:
    """Each tenant taking turns now, with its weight: the keys file's, and the projects
    made at runtime that are not archived (weight 1: the control plane has none)."""
    weights = {name: tenant.weight for name, tenant in tenants.named.items()}
    runtime = tenants.runtime
    for name, tenant in runtime.projects.items():
        if name not in runtime.archived:
            weights.setdefault(name, tenant.weight)
    return weights


@dataclass
class _Held:
    """A tenant's next job, read from its queue and not yet moved."""

    message: Any
    priority: int
    since: float = field(default_factory=time.monotonic)


class Turns:
    """Whose job goes next among the tenants' next jobs: the most urgent first, and among
    those of that priority, the tenant's whose virtual time is least (start-time fair
    queuing). A job moved adds 1/weight to its tenant's virtual time; a tenant that starts
    waiting starts at the virtual time of the last job moved, not where it left off (an
    idle tenant gets no burst of turns it saved up)."""

    def __init__(self, weights: dict[str, float]) -> None:
        self._weights = dict(weights)
        self._virtual = dict.fromkeys(weights, 0.0)
        self._now = 0.0  # the virtual time of the last job moved

    def weigh(self, weights: dict[str, float]) -> None:
        """The tenants and their weights from now on: one that joins starts at the virtual
        time of the last job moved (as one that starts waiting does); one gone is forgotten."""
        self._weights = dict(weights)
        self._virtual = {tenant: self._virtual.get(tenant, self._now) for tenant in weights}

    def waits(self, tenant: str) -> None:
        """`tenant` has a job waiting again (it had none)."""
        if self._virtual[tenant] < self._now:
            self._virtual[tenant] = self._now

    def next(self, heads: dict[str, int]) -> str:
        """The tenant whose next job goes now, of `heads` (each waiting tenant's next
        job's priority); its turn is counted."""
        tenant = min(heads, key=lambda t: (-heads[t], self._virtual[t], t))
        self._now = self._virtual[tenant]
        self._virtual[tenant] += 1.0 / self._weights[tenant]
        return tenant


Declare = Callable[[list[str]], None]  # adds queues to the API's Celery app (api/jobs/queue.py JobQueue.add_queues)


class FairShare:
    """Which models are contended (and so where a job is published), and the dispatchers."""

    def __init__(self, config: Config, tenants: Tenants, queues: list[str], redis: aioredis.Redis) -> None:
        """`tenants` is read as it is at each change, not copied; the tenants' queues of
        the start (`tenant_queues`) are the API's Celery app's from its start (api/services.py)."""
        self._config = config
        self._tenants = tenants
        self._queues = queues
        self._models = frozenset(queues)
        self._redis = redis
        self._renew = redis.register_script(FAIR_LOCK_RENEW)
        # The dispatchers' threads' own connection.
        self._sync = redis_clients.sync_client(config, socket_connect_timeout=config.redis_connect_timeout)
        self._me = uuid.uuid4().hex
        self._contended: set[str] = set()
        self._held_back: set[str] = set()  # contended models whose tenants' jobs wait for room
        self._leading: dict[str, threading.Event] = {queue: threading.Event() for queue in queues}
        self._stopping = threading.Event()
        # What the tenants were read from, and what was read: each replaced whole, never
        # changed in place (the dispatchers' threads read them).
        self._runtime: Directory | None = None
        self._weights: dict[str, float] = {}  # every tenant now
        self._routed: dict[str, float] = {}  # those whose jobs go to their queues while contended
        self._tenant_queues: list[str] = []
        self._declared: set[str] = set()  # tenants whose queues the API's Celery app has
        self.refresh(None)

    @property
    def enabled(self) -> bool:
        """Whether tenants take turns now: FAIR_SHARE is on and more than one tenant exists."""
        return bool(self._routed)

    @property
    def tenant_queues(self) -> list[str]:
        """Every tenant's queue of every model now (declared by the API, read by the dispatchers)."""
        return self._tenant_queues

    def refresh(self, declare: Declare | None) -> bool:
        """Read the tenants again if they changed (the control plane's projects are replaced
        whole as they change); True if they did. A new tenant's queues are added by
        `declare` before any job is routed to them (None: at start, where the API's
        Celery app is made with `tenant_queues`)."""
        runtime = self._tenants.runtime
        if runtime is self._runtime:
            return False
        self._runtime = runtime
        weights = weights_of(self._tenants)
        if weights == self._weights:
            return False
        routed = weights if self._config.fair_share and len(weights) > 1 else {}
        new = [tenant for tenant in routed if tenant not in self._declared]
        if new and declare is not None:
            declare([tenant_queue(queue, tenant) for queue in self._queues for tenant in new])
        self._declared.update(new)
        joined, left = weights.keys() - self._weights.keys(), self._weights.keys() - weights.keys()
        if self._weights and (joined or left):
            log.info("tenants taking turns now: %d (joined: %s; left: %s)",
                     len(routed), ", ".join(sorted(joined)) or "none", ", ".join(sorted(left)) or "none")  # fmt: skip
        self._weights = weights
        self._tenant_queues = sorted(tenant_queue(queue, tenant) for queue in self._queues for tenant in routed)
        self._routed = routed
        return True

    def route(self, queue: str, tenant: str) -> str:
        """Where a job of `tenant` for the model of `queue` is published now."""
        if queue in self._contended and tenant in self._routed:
            return tenant_queue(queue, tenant)
        return queue

    def held_back(self, queue: str) -> bool:
        """Whether tenants' jobs of the model of `queue` wait for room in its queue (its
        dispatcher holds them): batches' lines then step back (api/openai/batches/scheduling.py),
        or, being published to the model's queue directly, they would keep it full."""
        return queue in self._held_back

    def model_queue(self, queue: str) -> str:
        """The model's queue of a tenant's queue, any tenant's, one gone too (a model's
        queue itself otherwise)."""
        model, infix, _ = queue.rpartition(TENANT_INFIX)
        return model if infix and model in self._models else queue

    async def run(self, celery: Celery, declare: Declare) -> None:
        """Until cancelled: follow the tenants (`declare` adds a new tenant's queues to the
        API's Celery app), watch which models are contended, and lead the dispatchers of
        the models whose lock this process holds. With one tenant, only the first: the
        dispatchers start once there are several."""
        if not self._config.fair_share:
            return
        # Every tenant's queues added through `declare`, the start's too (adding one the
        # app has already changes nothing).
        self._declared.clear()
        self._runtime = None
        self._weights = {}
        threads: list[threading.Thread] = []
        last_lock = 0.0
        try:
            while True:
                self.refresh(declare)
                if self.enabled and not threads:
                    threads = [
                        threading.Thread(target=self._dispatch, args=(celery, queue), name=f"fair share {queue}",
                                         daemon=True)
                        for queue in self._queues
                    ]  # fmt: skip
                    for thread in threads:
                        thread.start()
                if threads:  # several tenants, now or once: their jobs may wait in their queues
                    with contextlib.suppress(RedisError, OSError):
                        flags = await self._redis.mget([self._config.keys.contended(q) for q in self._queues])
                        self._contended = {q for q, flag in zip(self._queues, flags, strict=True) if flag}
                        self._held_back = {q for q, flag in zip(self._queues, flags, strict=True) if flag in HELD_BACK}
                    if time.monotonic() - last_lock >= LOCK_SECONDS / 3:
                        last_lock = time.monotonic()
                        await self._hold_locks()
                await asyncio.sleep(WATCH_SECONDS)
        finally:
            led = [queue for queue, event in self._leading.items() if event.is_set()]
            self._stopping.set()
            for event in self._leading.values():
                event.clear()
            for thread in threads:
                await asyncio.get_running_loop().run_in_executor(None, thread.join, 5)
            # Another process takes over at once, not once the locks lapse.
            with contextlib.suppress(RedisError, OSError):
                for queue in led:
                    await self._redis.delete(self._config.keys.fair_lock(queue))
            self._sync.close()

    async def _hold_locks(self) -> None:
        for queue, leading in self._leading.items():
            if not self.enabled and queue not in self._contended:
                # One tenant left, and no tenant's job waits in its queue: nothing to dispatch.
                if leading.is_set():
                    log.info("no longer the dispatcher of queue %s: one tenant", queue)
                    leading.clear()
                    with contextlib.suppress(RedisError, OSError):
                        await self._redis.delete(self._config.keys.fair_lock(queue))
                continue
            try:
                held = await self._renew(keys=[self._config.keys.fair_lock(queue)],
                                         args=[self._me, int(LOCK_SECONDS * 1000)])  # fmt: skip
            except (RedisError, OSError):
                held = 0  # another process may hold it once Redis is back: let go
            if held and not leading.is_set():
                log.info("dispatching the jobs of queue %s fairly among tenants", queue)
                leading.set()
            elif not held and leading.is_set():
                log.info("no longer the dispatcher of queue %s", queue)
                leading.clear()

    def _dispatch(self, celery: Celery, queue: str) -> None:
        """The dispatcher of one model's queue, while this process leads it (a thread)."""
        while not self._stopping.is_set():
            if not self._leading[queue].wait(timeout=0.5):
                continue
            try:
                _Dispatcher(self, celery, queue).run()
            except Exception as exc:  # noqa: BLE001 - the broker went away: connect again
                log.warning("fair-share dispatcher of %s stopped: %s; starting again", queue, exc)
                self._stopping.wait(1.0)

    def _set_contended(self, queue: str, contended: bool, held_back: bool = False) -> None:
        """Tell every API process (with the dispatchers' own client: this runs in a thread)
        whether the model is contended, and whether tenants' jobs of it wait for room."""
        key = self._config.keys.contended(queue)
        try:
            if contended:
                self._sync.set(key, b"2" if held_back else b"1", px=int(LOCK_SECONDS * 1000))
            else:
                self._sync.delete(key)
        except (RedisError, OSError) as exc:
            log.warning("could not say whether queue %s is contended: %s", queue, exc)
        if contended:
            self._contended.add(queue)
        else:
            self._contended.discard(queue)
        if contended and held_back:
            self._held_back.add(queue)
        else:
            self._held_back.discard(queue)


class _Dispatcher:
    """One connection's worth of dispatching: ends when the broker connection fails or
    the lock is lost (the jobs held go back to their queues when the connection closes)."""

    def __init__(self, share: FairShare, celery: Celery, queue: str) -> None:
        self._share = share
        self._celery = celery
        self._queue = queue
        config = share._config
        self._rabbit = config.uses_rabbitmq
        self._ahead = config.fair_share_ahead
        # Well within a Redis broker's visibility timeout (the job lease).
        self._hold = min(HOLD_SECONDS, config.job_lease / 3)
        self._weights: dict[str, float] = {}  # the tenants whose queues are read, with their weights
        self._tenants: list[str] = []
        self._turns = Turns({})
        self._seen: dict[str, float] | None = None  # the share's tenants last followed
        self._left: dict[str, float] = {}  # tenants gone (projects archived) whose queues are still read: since when
        # A tenant gone is read this long at least: an API process routes jobs to its
        # queue until it sees the change (at once on the notice, or at its next poll).
        self._linger = 2 * config.control_poll_seconds + LOCK_SECONDS
        self._held: dict[str, _Held] = {}
        self._sources: dict[str, Any] = {}
        self._contended = False
        self._busy_at = 0.0  # when tenants' jobs last waited, or the model's queue was full

    def run(self) -> None:
        leading = self._share._leading[self._queue]
        config = self._share._config
        with self._celery.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1)
            channel = connection.channel()
            for band in bands(config, self._queue):
                declared(band, config)(channel).declare()
            self._follow(channel)
            # Archived projects' jobs left in their queues (archived while this model's
            # previous dispatcher had not moved them yet) are moved as a gone tenant's.
            runtime = self._share._tenants.runtime
            for tenant in self._stranded(connection, sorted(runtime.archived - self._weights.keys())):
                self._sources[tenant] = self._bound(channel, tenant)
                self._weights[tenant] = runtime.projects[tenant].weight
                self._left[tenant] = time.monotonic() - self._linger
            self._tenants = sorted(self._sources)
            self._turns.weigh(self._weights)
            producer = connection.Producer(channel)
            try:
                while leading.is_set() and not self._share._stopping.is_set():
                    moved = self._round(channel, producer)
                    self._share._stopping.wait(ROUND_SECONDS if self._contended or moved else IDLE_SECONDS)
            finally:
                for held in self._held.values():
                    with contextlib.suppress(Exception):
                        held.message.reject(requeue=True)
                self._held.clear()
                if self._contended:
                    self._share._set_contended(self._queue, False)

    def _bound(self, channel: Any, tenant: str) -> list[Any]:
        """A tenant's queue of this model; on quorum queues, its bands, highest first."""
        config = self._share._config
        return [declared(band, config)(channel) for band in bands(config, tenant_queue(self._queue, tenant))]

    def _follow(self, channel: Any) -> None:
        """Take the share's tenants as they are now, if they changed: a new one's queues are
        declared and read from this round on, its turns starting now; one gone is read
        until its queues are empty (`_forget_gone`)."""
        weights = self._share._weights
        if weights is self._seen:
            return
        self._seen = weights
        now = time.monotonic()
        for tenant in weights:
            if tenant not in self._sources:
                self._sources[tenant] = sources = self._bound(channel, tenant)
                for source in sources:
                    source.declare()
            self._left.pop(tenant, None)
        for tenant in self._sources:
            if tenant not in weights:
                self._left.setdefault(tenant, now)
        self._weights = {tenant: weights.get(tenant, self._weights.get(tenant, 1.0)) for tenant in self._sources}
        self._tenants = sorted(self._sources)
        self._turns.weigh(self._weights)

    def _forget_gone(self, channel: Any) -> None:
        """Stop reading the queues of the tenants gone long enough that are empty."""
        now = time.monotonic()
        for tenant, since in list(self._left.items()):
            if now - since < self._linger or tenant in self._held:
                continue
            if any(self._depth(channel, source.name) for source in self._sources[tenant]):
                continue
            del self._left[tenant], self._sources[tenant], self._weights[tenant]
            self._tenants = sorted(self._sources)
            self._turns.weigh(self._weights)
            log.info("tenant %s has left the turns of queue %s", tenant, self._queue)

    def _stranded(self, connection: Any, tenants: list[str]) -> list[str]:
        """Of `tenants`, those whose queue of this model holds jobs. Asked on a channel of
        its own: on RabbitMQ, asking of a queue that was never declared closes the channel."""
        found = []
        probe = connection.channel()
        try:
            for tenant in tenants:
                for band in bands(self._share._config, tenant_queue(self._queue, tenant)):
                    try:
                        if probe.queue_declare(band, passive=True).message_count:
                            found.append(tenant)
                            break
                    except ChannelError:  # never declared (the Redis broker: empty)
                        if self._rabbit:  # RabbitMQ closed the channel
                            with contextlib.suppress(Exception):
                                probe.close()
                            probe = connection.channel()
        finally:
            with contextlib.suppress(Exception):
                probe.close()
        return found

    def _depth(self, channel: Any, queue: str) -> int:
        try:
            return int(channel.queue_declare(queue, passive=True).message_count)
        except ChannelError:  # on Redis: a queue is a list, and an empty list is none
            if self._rabbit:
                raise
            return 0

    def _round(self, channel: Any, producer: Any) -> int:
        self._follow(channel)
        if self._left:
            self._forget_gone(channel)
        # With one tenant now, a full queue is no one else's wait: only jobs left in
        # tenants' queues are moved.
        shared = self._share.enabled
        depth = sum(self._depth(channel, band) for band in bands(self._share._config, self._queue))
        if not self._contended:
            # Jobs left in tenants' queues (by a dispatcher that died, or published as the
            # model stopped being contended) are moved as a contended model's are.
            waiting = (self._depth(channel, source.name) for sources in self._sources.values() for source in sources)
            if (depth < self._ahead or not shared) and not any(waiting):
                return 0
            self._contended = True
            self._busy_at = time.monotonic()
            log.info("queue %s is contended (%d jobs waiting): tenants' jobs now take turns by weight",
                     self._queue, depth)  # fmt: skip
        self._read_heads(channel)
        # Renewed each round while contended, saying whether tenants' jobs wait.
        self._share._set_contended(self._queue, True, held_back=bool(self._held))
        moved = 0
        room = self._ahead - depth
        while room > 0 and self._held:
            tenant = self._turns.next({name: held.priority for name, held in self._held.items()})
            self._move(producer, self._held.pop(tenant))
            moved += 1
            room -= 1
            self._read_head(channel, tenant)
        if self._held or (shared and depth + moved >= self._ahead):
            self._busy_at = time.monotonic()
        elif time.monotonic() - self._busy_at > CALM_SECONDS:
            self._contended = False
            self._share._set_contended(self._queue, False)
            log.info("queue %s is no longer contended", self._queue)
        return moved

    def _read_heads(self, channel: Any) -> None:
        now = time.monotonic()
        for tenant in self._tenants:
            held = self._held.get(tenant)
            if held is not None and now - held.since > self._hold:
                # Not held long (the broker would hand it out again): back to its queue.
                held.message.reject(requeue=True)
                del self._held[tenant]
            if tenant not in self._held:
                self._read_head(channel, tenant)

    def _read_head(self, channel: Any, tenant: str) -> None:
        # The tenant's next job: of its queue, or of its highest band holding one.
        message = next(filter(None, (source.get(no_ack=False) for source in self._sources[tenant])), None)
        if message is None:
            return
        if tenant not in self._held:
            self._turns.waits(tenant)
        priority = int(message.properties.get("priority") or 0)
        if not self._rabbit:  # Kombu's Redis transport reads lower numbers first
            priority = MAX_PRIORITY - 1 - priority
        self._held[tenant] = _Held(message, priority)

    def _move(self, producer: Any, held: _Held) -> None:
        message = held.message
        # The model's queue; with quorum queues, the job's priority band of it.
        target = declared(band_queue(self._share._config, self._queue, held.priority), self._share._config)
        properties = {
            name: message.properties[name]
            for name in ("correlation_id", "reply_to", "priority", "expiration")
            if message.properties.get(name) is not None
        }
        producer.publish(
            message.body,
            exchange=target.exchange,
            routing_key=target.routing_key,
            headers=message.headers,
            content_type=message.content_type,
            content_encoding=message.content_encoding,
            delivery_mode=2,
            retry=False,
            **properties,
        )
        message.ack()
