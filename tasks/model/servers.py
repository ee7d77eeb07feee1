"""The servers of a model, as every worker shares them: slots, health, probes.

A model the registry gives several servers (or fallbacks) has a *pool* in Redis
(`Keys.servers`): each server's slots (the calls it takes at once), how many are
free, and its state. A job takes a slot before it calls a server and gives it back
after (`ServerPool.take`, `release`): so a server with a free slot gets the next job
whichever worker holds it, and a slow server, whose slots come back slowly, gets
fewer. Jobs that find no slot free wait in one line across all workers, the most
urgent first and then the oldest (`Keys.server_waiting`), and are woken one by one
as slots come back (a list per waiter: no herd). Jobs of several tenants take turns
in it by their tenants' weights, each tenant's own in that order
(`Keys.server_turns`, SERVER_TAKE).

A server that fails `SERVER_FAILURES` calls in a row, or refuses a connection, is
*down*: it takes no new jobs (the calls it still runs end as they will: it is
*draining* until they have), and one worker at a time probes it, after
`SERVER_PROBE_BACKOFF` seconds and then twice as long each time up to
`SERVER_PROBE_MAX` (`/health`, else `/v1/models`). When it answers it is up again.

A slot is held under a lease (`JOB_LEASE`), renewed by its worker's `PoolKeeper`
thread; the slots of a worker that died come back when their lease ends. Redis
emptied loses the pool: the next call makes it again, every slot free.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from shared.config import Config
from shared.contract import Keys
from shared.contract.scripts import (
    SERVER_PROBES,
    SERVER_RECLAIM,
    SERVER_RECOVERED,
    SERVER_RELEASE,
    SERVER_RENEW,
    SERVER_TAKE,
)
from shared.registry import Model, Server
from shared.storage import redis_clients
from shared.tenants import DEFAULT_TENANT

log = logging.getLogger(__name__)

WAIT_STEP = 1.0  # seconds a waiter sleeps at most before it looks again (a missed wake-up)
RELEASE_PATIENCE = 10.0  # seconds a slot's release waits for a Redis away (restarting)


@dataclass(frozen=True)
class Slot:
    """A slot of one server, held by one job."""

    model: Model
    server: Server
    hold: str  # its id in the holds hash; "" for a model without a pool
    affinity_hit: bool = False


class Waker:
    """Stops a wait for a slot from another thread (a cancelled job): `Cancel.attach` takes it."""

    def __init__(self, client: redis.Redis, key: str) -> None:
        self._client = client
        self._key = key

    def abort(self) -> None:
        try:
            self._client.rpush(self._key, 1)
            self._client.pexpire(self._key, 60000)
        except redis.RedisError:
            pass  # the waiter looks again within WAIT_STEP


class ServerPool:
    """One model's servers in Redis, as this worker process takes and gives back their slots."""

    def __init__(self, config: Config, client: redis.Redis, model: Model, worker: str) -> None:
        self.model = model
        self._config = config
        self._redis = client
        self._worker = worker
        keys: Keys = config.keys
        self._pool = keys.servers(model.name)
        self._holds = keys.server_holds(model.name)
        self._waiting = keys.server_waiting(model.name)
        self._tenant_waiting = lambda tenant: keys.server_tenant_waiting(model.name, tenant)
        self._turns = keys.server_turns(model.name)
        self._beats = keys.server_beats(model.name)
        self._wake = keys.server_wake_prefix(model.name)
        self._affinity = lambda tenant, digest: keys.affinity(model.name, tenant, digest)
        self._spec = ",".join(f"{server.name}={server.slots}" for server in model.servers)
        self._take = client.register_script(SERVER_TAKE)
        self._release = client.register_script(SERVER_RELEASE)
        self._probes = client.register_script(SERVER_PROBES)
        self._recovered = client.register_script(SERVER_RECOVERED)
        self._reclaim = client.register_script(SERVER_RECLAIM)
        self._renew = client.register_script(SERVER_RENEW)
        self._held: set[str] = set()
        self._lock = threading.Lock()

    # -- taking and giving back ------------------------------------------------------

    def try_take(
        self,
        waiter: str,
        score: float,
        exclude: frozenset[str] = frozenset(),
        prefix: str | None = None,
        tenant: str = DEFAULT_TENANT,
        weight: float = 1.0,
    ) -> tuple[Slot | None, float | None]:
        """A slot, or (None, when the model's last healthy server went down, if it did):
        the job is in line as `waiter` of `tenant` (its turns by `weight`) until it takes
        one or `forget(waiter, tenant)`. `prefix`: its prompt prefix's hash, for
        `tenant`'s prefix affinity."""
        now = _ms()
        hold = uuid.uuid4().hex
        lease = self._config.job_lease * 1000
        use_affinity = prefix is not None and self.model.prefix_affinity
        affinity_key = self._affinity(tenant, prefix) if use_affinity and prefix else self._pool
        ttl = self._config.prefix_affinity_ttl if use_affinity else 0
        excluded = "," + ",".join(sorted(exclude)) + "," if exclude else ","
        with self._lock:
            self._held.add(hold)  # renewed from now on, in case the answer is lost on the way back
        try:
            answer = self._take(
                keys=[self._pool, self._holds, self._waiting, self._beats, affinity_key, self._turns],
                args=[
                    now,
                    self._spec,
                    waiter,
                    score,
                    hold,
                    now + lease,
                    now + int(3 * WAIT_STEP * 1000) + 5000,
                    excluded,
                    ttl,
                    self._wake,
                    self._worker,
                    tenant,
                    weight,
                ],
            )
        except BaseException:
            with self._lock:
                self._held.discard(hold)
            raise
        if int(answer[0]) == 1:
            server = self.model.server(_text(answer[1]))
            return Slot(self.model, server, hold, affinity_hit=int(answer[2]) == 1), None
        with self._lock:
            self._held.discard(hold)
        down_since = float(_text(answer[1]))
        return None, (down_since / 1000 if down_since else None)

    def wait(self, waiter: str, seconds: float) -> None:
        """Sleep until woken (a slot came back, a server came up, a cancel) or `seconds` passed."""
        if seconds > 0:
            # redis-py reads a blocking command's reply within the command's own timeout: on
            # a loaded machine Redis's "nothing came" may arrive just after it. The caller
            # looks again, as after any wake-up (a job failed on it once).
            with contextlib.suppress(redis.TimeoutError):
                self._redis.blpop([self._wake + waiter], timeout=max(0.01, seconds))

    def waker(self, waiter: str) -> Waker:
        return Waker(self._redis, self._wake + waiter)

    def forget(self, waiter: str, tenant: str = DEFAULT_TENANT) -> None:
        """Take `waiter` of `tenant` out of the line (it took a slot elsewhere, was
        cancelled, gave up)."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.zrem(self._waiting, waiter)
        pipe.zrem(self._tenant_waiting(tenant), waiter)
        pipe.hdel(self._beats, waiter)
        pipe.delete(self._wake + waiter)
        pipe.execute()

    def release(self, slot: Slot, outcome: str, why: str = "", seconds: float | None = None) -> None:
        """Give `slot` back: `outcome` ok, fail, down or none (see SERVER_RELEASE); an
        answered call's `seconds` weigh the server's next jobs. Bookkeeping: it never
        fails the job whose call ended. A Redis away is waited for RELEASE_PATIENCE
        seconds; past them the slot comes back as its hold lapses (JOB_LEASE: it is no
        longer renewed), and a Redis that forgot the hold answers a release as done."""
        with self._lock:
            self._held.discard(slot.hold)
        try:
            answer = redis_clients.patiently(
                lambda: self._release(
                    keys=[self._pool, self._holds, self._waiting, self._turns],
                    args=[
                        slot.hold,
                        outcome,
                        _ms(),
                        self._config.server_failures,
                        int(self._config.server_probe_backoff * 1000),
                        self._wake,
                        why[:300],
                        self._spec,
                        "" if seconds is None else round(seconds * 1000, 1),
                    ],
                ),
                RELEASE_PATIENCE,
            )
        except (redis.RedisError, OSError) as exc:
            log.warning(
                "a slot of model server %s of %s not given back (%s): it comes back within JOB_LEASE",
                slot.server.name, self.model.name, exc,
                extra={"server": slot.server.name, "model": self.model.name},
            )  # fmt: skip
            return
        if int(answer[0]) == 1 and _text(answer[2]) == "down":
            log.warning(
                "model server %s of %s is down: it takes no new jobs until it answers a probe (%s)",
                slot.server.name, self.model.name, why,
                extra={"server": slot.server.name, "model": self.model.name, "server_state": "down"},
            )  # fmt: skip
            if _text(answer[3]) == "last":
                log.error(
                    "no server of model %s is up: its jobs wait for one", self.model.name,
                    extra={"model": self.model.name},
                )  # fmt: skip

    # -- what the keeper does --------------------------------------------------------

    def keep(self, probe: Callable[[Server], str | None]) -> None:
        """Renew this process's holds, give back the slots of dead workers, probe the
        servers whose probe is due (`probe(server)`: None when it answered, else why not)."""
        now = _ms()
        with self._lock:
            held = list(self._held)
        if held:
            self._renew(keys=[self._holds], args=[now + self._config.job_lease * 1000, *held])
        keys = [self._pool, self._holds, self._waiting, self._beats, self._turns]
        reclaimed = int(self._reclaim(keys=keys, args=[now, self._wake, self._spec]))
        if reclaimed:
            log.warning("%d slot(s) or waiter(s) of model %s came back from workers gone", reclaimed, self.model.name)
        most = int(self._config.server_probe_max * 1000)
        for name in self._probes(keys=[self._pool], args=[now, self._spec, most]):
            server = self.model.server(_text(name))
            failure = probe(server)
            if failure is not None:
                log.info("model server %s of %s still down: %s", server.name, self.model.name, failure)
                continue
            args = [server.name, _ms(), self._wake, self._spec]
            if int(self._recovered(keys=[self._pool, self._waiting, self._turns], args=args)):
                log.warning(
                    "model server %s of %s is up again: it takes jobs", server.name, self.model.name,
                    extra={"server": server.name, "model": self.model.name, "server_state": "up"},
                )  # fmt: skip

    def healthy_besides(self, tried: frozenset[str]) -> bool:
        """Whether a server not in `tried` is up."""
        states = self._redis.hmget(self._pool, [f"{server.name}|state" for server in self.model.servers])
        return any(
            _text(state) == "up" and server.name not in tried
            for server, state in zip(self.model.servers, states, strict=True)
            if state is not None
        )


def prefix_hash(messages: list[dict[str, Any]] | None, min_chars: int) -> str | None:
    """The hash of a conversation's prefix (every message but the last), when it is at
    least `min_chars` long: jobs continuing one conversation, or sharing one long
    system prompt, share it (its affinity is kept per tenant: `ServerPool.try_take`)."""
    if not messages or len(messages) < 2:
        return None
    prefix = json.dumps(messages[:-1], sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    if len(prefix) < min_chars:
        return None
    return hashlib.sha256(prefix.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _ms() -> int:
    return int(time.time() * 1000)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class PoolKeeper:
    """A worker process's thread that keeps its models' pools: renews the slots it
    holds, gives back those of dead workers, probes the servers that are down."""

    EVERY = 0.5  # seconds

    def __init__(self, pools: Callable[[], list[ServerPool]], probe: Callable[[Model, Server], str | None]) -> None:
        self._pools = pools
        self._probe = probe
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="server-pool-keeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def _run(self) -> None:
        while not self._stopped.wait(self.EVERY):
            for pool in self._pools():
                try:
                    pool.keep(lambda server, model=pool.model: self._probe(model, server))
                except (redis.RedisError, OSError) as exc:
                    log.warning("could not keep the servers of model %s: %s", pool.model.name, exc)
