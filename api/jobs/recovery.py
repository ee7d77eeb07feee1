"""Jobs whose message a Redis broker lost, queued again (RabbitMQ loses none it confirmed).

Kombu's Redis transport pops a message from its queue, then records it as
unacknowledged: a worker killed between the two loses the message, and a Redis server
that stops as it hands a message out never delivers it. Every API process therefore
looks after the jobs it published and awaits (`Published`):

- every `JOB_LEASE` seconds (`requeue_lost`), a job is queued again when it has no
  result and has not started (or started, and no live worker holds its lease: its
  worker lost it with Redis), its queue is empty, and no worker holds its message.
  Jobs queued without waiting (`wait=0`, background responses) are looked after the
  same way until their result is stored;
- when the result waiter's connection to Redis is made again (the server came back),
  every awaited job that has not started is queued again;
- a batch's line, awaited a while at a time, is looked after the same way
  (`queue_again_if_lost`).

A second message of a job that did arrive is harmless: the worker finds the job
running or answered (tasks/running.py). Each queuing again passes the ceiling of
`Requeues`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from api.errors import GatewayError
from api.jobs.queue import JobQueue
from api.jobs.requeues import Published, Requeues
from api.jobs.result_waiter import ResultWaiter
from api.jobs.route import JobRoute
from api.tenancy.fair_share import FairShare
from shared.config import Config
from shared.contract import JobField

log = logging.getLogger(__name__)


class LostJobs:
    """Finds the jobs a Redis broker lost, and queues them again (one per API process)."""

    def __init__(
        self,
        config: Config,
        redis: aioredis.Redis,
        queue: JobQueue,
        waiter: ResultWaiter,
        published: Published,
        requeues: Requeues,
        fair: FairShare,
    ) -> None:
        self._config = config
        self._redis = redis
        self._queue = queue
        self._waiter = waiter
        self._published = published
        self._requeues = requeues
        self._fair = fair

    async def run(self) -> None:
        """Until cancelled, on a Redis broker: look for lost jobs every `JOB_LEASE`
        seconds, and queue again the unstarted ones whenever Redis comes back."""
        if self._config.uses_rabbitmq:
            return
        await asyncio.gather(self._find_forever(), self._after_reconnects())

    async def _find_forever(self) -> None:
        while True:
            await asyncio.sleep(self._config.job_lease)
            try:
                await self.requeue_lost()
            except (RedisError, OSError) as exc:
                log.warning("could not look for lost jobs: %s", exc)

    async def _after_reconnects(self) -> None:
        while True:
            await self._waiter.reconnected()
            try:
                unstarted = await self._unstarted(list(self._published))
            except (RedisError, OSError) as exc:
                log.warning("could not find the jobs to queue again: %s", exc)
                continue
            await self._publish_again(unstarted, "job queued again after the broker restarted")

    async def requeue_lost(self) -> None:
        """Queue again each job of this process's, accepted over a lease ago, whose message
        is gone; forget those queued without waiting that have their result."""
        settled = time.time() - self._config.job_lease
        queue_of = {key: entry.queue for key, entry in list(self._published.items())
                    if entry.job["accepted_at"] < settled}  # fmt: skip
        unstarted, answered, gone = await self._stalled(list(queue_of))
        # Jobs nobody awaits are forgotten once answered, or once their claim is gone:
        # deleted (DELETE /v1/responses/{id}) or expired, they are not queued again (a
        # Redis that came back empty is seen by _after_reconnects, which queues again
        # what had not started).
        published = self._published
        forgotten = {key for key in answered + gone if key in published and not published[key].awaited}
        for key in forgotten:
            published.pop(key, None)
        unstarted = [key for key in unstarted if key not in forgotten]
        if not unstarted:
            return
        # A job published to its tenant's queue (a busy model's) may have been moved to
        # the model's: both are looked at.
        model_of = self._fair.model_queue
        queues = sorted({q for key in unstarted for q in (queue_of[key], model_of(queue_of[key]))})
        depths = await asyncio.get_running_loop().run_in_executor(None, self._queue.depths, queues)
        # A job whose queue still holds messages may be one of them: only those of empty
        # queues are looked for among the messages workers hold.
        candidates = [key for key in unstarted
                      if depths.get(queue_of[key]) == 0 and depths.get(model_of(queue_of[key])) == 0]  # fmt: skip
        if not candidates:
            return
        held = await self._held_by_workers()
        lost = [key for key in candidates if key not in held]
        await self._publish_again(lost, "job queued again: its message was lost between the broker and a worker")

    async def queue_again_if_lost(self, route: JobRoute, job: dict[str, Any], reply_to: str) -> bool:
        """For a job awaited again and again (a batch's line), on a Redis broker: queue it
        again when its message is gone. True when it was queued again."""
        if self._config.uses_rabbitmq or not await self._unstarted([route.key]):
            return False
        depths = await asyncio.get_running_loop().run_in_executor(None, self._queue.depths, [route.queue])
        if depths.get(route.queue) != 0 or route.key in await self._held_by_workers():
            return False
        if not self._requeues.allow(route.key, "lost"):
            return False
        sent = {**job, "accepted_at": time.time(), "reply_to": reply_to}
        await self._queue.submit(route.task, route.key, sent, route.queue, route.priority)
        log.warning("job queued again: its message was lost between the broker and a worker",
                    extra={"job_id": route.key, "queue": route.queue})  # fmt: skip
        return True

    async def _stalled(self, keys: list[str]) -> tuple[list[str], list[str], list[str]]:
        """Those of `keys` without a result that no live worker runs (never started, or
        started and their lease gone); those with a result; those whose claim is gone."""
        if not keys:
            return [], [], []
        names = self._config.keys
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            pipe.hexists(names.job(key), JobField.STARTED_AT).exists(names.result(key)).exists(names.lease(key))
            pipe.exists(names.job(key))
        flags = await pipe.execute()
        stalled, answered, gone = [], [], []
        for n, key in enumerate(keys):
            started, result, leased, claimed = flags[4 * n : 4 * n + 4]
            if result:
                answered.append(key)
                continue
            if not claimed:
                gone.append(key)
            if not started or not leased:
                stalled.append(key)
        return stalled, answered, gone

    async def _unstarted(self, keys: list[str]) -> list[str]:
        """Those of `keys` that have neither started nor a result."""
        if not keys:
            return []
        names = self._config.keys
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            pipe.hexists(names.job(key), JobField.STARTED_AT).exists(names.result(key))
        flags = await pipe.execute()
        return [key for key, started, answered in zip(keys, flags[::2], flags[1::2], strict=True)
                if not started and not answered]  # fmt: skip

    async def _held_by_workers(self) -> set[str]:
        """The jobs whose messages workers hold (Kombu's unacknowledged messages)."""
        held = set()
        async for _, value in self._redis.hscan_iter(self._config.keys.unacked):
            try:
                held.add(json.loads(value)[0]["headers"]["id"])
            except (ValueError, LookupError, TypeError):
                continue
        return held

    async def _publish_again(self, keys: list[str], why: str) -> None:
        for key in keys:
            entry = self._published.get(key)
            if entry is None:  # answered meanwhile
                continue
            if not self._requeues.allow(key, "broker"):
                continue
            try:
                await self._queue.submit(
                    entry.route.task, key, entry.job, entry.queue, entry.route.priority, entry.headers
                )
                log.warning(why, extra={"job_id": key, "queue": entry.queue})
            except GatewayError as exc:
                log.warning("could not queue job %s again: %s", key, exc)
