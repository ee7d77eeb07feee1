"""The signals to scale workers on, per model: ``GET /scaling`` (JSON, for KEDA's
metrics-api scaler) and the ``llm_api_model_*`` gauges of ``/metrics`` (for its
Prometheus scaler, or an HPA through an adapter).

Per model (its queue's figures; models sharing a queue share them):

- ``waiting``: jobs not started: in the broker's queues (the model's and its
  tenants', api/tenancy/fair_share.py) and held by workers waiting for a slot;
- ``oldest_waiting_seconds``: how long the oldest of them has waited (0 when none);
- ``running``: its jobs running on a worker now;
- ``slots`` and ``busy_slots``: the workers' pool slots, and those executing a task;
- ``workers``: the worker processes consuming its queue;
- ``demand``: ``waiting + busy_slots``, the slots the model needs now;
- ``servers`` (a model with several servers or fallbacks, docs/servers.md): each
  server's state (healthy, draining, down), slots, busy slots, failures and jobs;
  ``waiting_for_server``: jobs a worker holds that wait for a free server slot (and
  asked for, ``waiting_for_server_by_band``: by priority band, from the slots' line);
- ``waiting_by_band`` (asked for: ``?bands=true``): the jobs accepted and not started,
  by priority band (high 7-9, normal 4-6, low 0-3), counted from their claims in Redis
  (each holds its queue and priority), so the same on every broker: a classic
  RabbitMQ priority queue counts its messages but not per priority. It reads every
  claim (up to ``MAX_QUEUED_JOBS``), so it is not read unless asked; jobs that start
  while it is read may be counted in their band or not.

Queue length alone scales too late for long generations: a running job has left
the queue, so a queue of 0 says nothing of 64 slots busy for minutes. ``demand``
counts both, and divided by one worker's slots is the number of workers wanted.

Workers report their slots to Redis every ``WORKER_REPORT_SECONDS`` (tasks/capacity.py);
a report three intervals old is a dead worker's, and is dropped.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from api.errors import BrokerUnavailable, ResultStoreUnavailable
from api.jobs.queue import JobQueue
from api.tenancy.fair_share import FairShare
from shared.broker.queues import BANDS, band_of
from shared.config import Config
from shared.contract import JobField
from shared.contract.keys import capacity_queue
from shared.registry import Registry
from shared.servers import line_priorities, servers_state

PAGE = 200  # claims read at a time when looking for the oldest job waiting for each queue


@dataclass(frozen=True)
class Signals:
    """One model's signals."""

    queue: str
    waiting: int
    oldest_waiting_seconds: float
    running: int
    slots: int
    busy_slots: int
    workers: int
    servers: tuple[dict[str, Any], ...] | None = None
    waiting_for_server: int | None = None
    waiting_by_band: dict[str, int] | None = None
    waiting_for_server_by_band: dict[str, int] | None = None

    @property
    def demand(self) -> int:
        return self.waiting + self.busy_slots

    def as_dict(self) -> dict[str, Any]:
        shown = {**asdict(self), "demand": self.demand}
        if self.servers is None:
            del shown["servers"], shown["waiting_for_server"]
        else:
            shown["servers"] = list(self.servers)
        for asked in ("waiting_by_band", "waiting_for_server_by_band"):
            if shown[asked] is None:
                del shown[asked]
        return shown


@dataclass
class _Capacity:
    slots: int = 0
    busy: int = 0
    running: int = 0
    held: int = 0
    workers: int = 0


class Scaling:
    """Reads the signals of every model of the registry."""

    def __init__(
        self, config: Config, registry: Registry, queue: JobQueue, fair: FairShare, redis: aioredis.Redis
    ) -> None:
        self._config = config
        self._registry = registry
        self._queue = queue
        self._fair = fair
        self._redis = redis

    async def read(self, depths: dict[str, int] | None = None, bands: bool = False) -> dict[str, Signals]:
        """The signals by model name; `depths` (messages per queue) when read already;
        with `bands`, each model's waiting jobs by priority band too. BrokerUnavailable or
        ResultStoreUnavailable when a part cannot be asked."""
        queues = self._registry.queues
        if depths is None:
            asked = [*queues, *self._fair.tenant_queues]
            depths = await asyncio.get_running_loop().run_in_executor(None, self._queue.depths, asked)
        if any(depths.get(queue, 0) < 0 for queue in queues):
            broker = self._config.broker_name
            raise BrokerUnavailable(f"broker ({broker}) unavailable: the jobs waiting cannot be counted")
        queued = dict.fromkeys(queues, 0)
        for name, count in depths.items():
            model_queue = self._fair.model_queue(name)
            if model_queue in queued and count > 0:
                queued[model_queue] += count
        try:
            capacity = await self._capacity()
            waiting = {queue: queued[queue] + max(0, capacity[queue].held - capacity[queue].busy) for queue in queues}
            oldest = await self._oldest([queue for queue in queues if waiting[queue] > 0])
            pools = await self._pools(bands)
            by_band = await self._by_band(queues) if bands else {}
        except (RedisError, OSError):
            raise ResultStoreUnavailable("result store (Redis) unavailable: worker slots cannot be read") from None
        now = time.time()
        signals = {}
        for model in self._registry.models:
            queue, held = model.queue, capacity[model.queue]
            signals[model.name] = Signals(
                queue=queue,
                waiting=waiting[queue],
                oldest_waiting_seconds=round(max(0.0, now - oldest[queue]), 3) if queue in oldest else 0.0,
                running=held.running,
                slots=held.slots,
                busy_slots=held.busy,
                workers=held.workers,
                **pools.get(model.name, {}),
                waiting_by_band=dict(by_band[queue]) if bands else None,
            )
        return signals

    async def _pools(self, bands: bool = False) -> dict[str, dict[str, Any]]:
        """The servers of each model with a pool (tasks/model/servers.py), as workers left
        them; with `bands`, the jobs in line for a slot by priority band."""
        pooled = [model for model in self._registry.models if model.pooled]
        if not pooled:
            return {}
        keys = self._config.keys
        pipe = self._redis.pipeline(transaction=False)
        for model in pooled:
            pipe.hgetall(keys.servers(model.name))
            pipe.zcard(keys.server_waiting(model.name))
            for _, low, high in line_priorities() if bands else ():
                pipe.zcount(keys.server_waiting(model.name), low, f"({high}")
        read = await pipe.execute()
        found = {}
        width = 2 + (len(line_priorities()) if bands else 0)
        for n, model in enumerate(pooled):
            raw, count, *per_priority = read[n * width : (n + 1) * width]
            found[model.name] = {"servers": tuple(servers_state(model, raw)), "waiting_for_server": int(count)}
            if bands:
                by_band = dict.fromkeys(BANDS, 0)
                for (priority, _, _), counted in zip(line_priorities(), per_priority, strict=True):
                    by_band[band_of(priority)] += int(counted)
                found[model.name]["waiting_for_server_by_band"] = by_band
        return found

    async def _capacity(self) -> dict[str, _Capacity]:
        """The workers' reports summed by queue; stale reports (dead workers') removed."""
        key = self._config.keys.capacity
        by_queue = {queue: _Capacity() for queue in self._registry.queues}
        stale = []
        now = time.time()
        for field, raw in (await self._redis.hgetall(key)).items():
            name = field.decode()
            try:
                report = json.loads(raw)
                fresh = now - float(report["at"]) <= 3 * float(report["every"])
            except (ValueError, KeyError, TypeError):
                fresh = False
            if not fresh:
                stale.append(name)
                continue
            queue = capacity_queue(name)
            if queue in by_queue:
                total = by_queue[queue]
                total.workers += 1
                total.slots += int(report["slots"])
                total.busy += int(report["busy"])
                total.running += int(report["running"])
                total.held += int(report["held"])
        if stale:
            await self._redis.hdel(key, *stale)
        return by_queue

    async def _by_band(self, queues: list[str]) -> dict[str, dict[str, int]]:
        """The jobs accepted and not started of each of `queues`, by priority band, read
        from every claim (its queue and priority)."""
        counts = {queue: dict.fromkeys(BANDS, 0) for queue in queues}
        keys = self._config.keys
        start = 0
        while start < self._config.max_queued_jobs:
            page = await self._redis.zrange(keys.queued, start, start + PAGE - 1)
            if not page:
                break
            pipe = self._redis.pipeline(transaction=False)
            for job_id in page:
                pipe.hmget(keys.job(job_id.decode()), JobField.QUEUE, JobField.PRIORITY)
            for queue, priority in await pipe.execute():
                counted = counts.get(queue.decode()) if queue else None
                if counted is not None:
                    counted[band_of(int(priority) if priority else None)] += 1
            start += PAGE
        return counts

    async def _oldest(self, queues: list[str]) -> dict[str, float]:
        """When the oldest job not started of each of `queues` was accepted, read from
        the oldest claims up until each queue's is found."""
        wanted, found = set(queues), {}
        keys = self._config.keys
        start = 0
        while wanted and start < self._config.max_queued_jobs:
            page = await self._redis.zrange(keys.queued, start, start + PAGE - 1, withscores=True)
            if not page:
                break
            pipe = self._redis.pipeline(transaction=False)
            for job_id, _ in page:
                pipe.hget(keys.job(job_id.decode()), JobField.QUEUE)
            for (_, accepted), queue in zip(page, await pipe.execute(), strict=True):
                name = queue.decode() if queue else None
                if name in wanted:
                    found[name] = accepted
                    wanted.discard(name)
            start += PAGE
        return found
