"""What a scrape of ``GET /metrics`` reads at that moment, beside the counters the API
keeps itself: the jobs waiting in each queue and the dead letters (asked of the
broker), the webhook deliveries (all workers', from Redis), the lines of the batches
this process drives, each model's scaling signals, the last readiness checks
(which a scrape keeps going, as a probe of /ready does), and whether the control
plane's database answered."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from functools import partial

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from api.errors import GatewayError
from api.jobs.queue import JobQueue
from api.observability.metrics import Metrics
from api.observability.readiness import Readiness
from api.observability.scaling import Scaling
from shared.config import Config
from shared.contract.keys import webhook_count_of

log = logging.getLogger(__name__)

LineCounts = Callable[[], dict[tuple[str, str], int]]  # (model, state): lines


class Scrape:
    """Renders /metrics (one per API process)."""

    def __init__(
        self,
        config: Config,
        metrics: Metrics,
        queue: JobQueue,
        queues: Callable[[], list[str]],
        redis: aioredis.Redis,
        scaling: Scaling,
        batch_lines: LineCounts,
        readiness: Readiness,
        database_up: Callable[[], bool] | None = None,
    ) -> None:
        """`queues()` are those whose depth is shown (every model's, and the tenants' of
        each model, as tenants come and go); `batch_lines()` counts the lines of the
        batches this process drives; `database_up()` whether the control plane's database
        answered its last poll (a part shown beside the readiness checks, not one of them:
        no request waits for it)."""
        self._config = config
        self._metrics = metrics
        self._queue = queue
        self._queues = queues
        self._redis = redis
        self._scaling = scaling
        self._batch_lines = batch_lines
        self._readiness = readiness
        self._database_up = database_up

    async def render(self) -> bytes:
        """The text format, read now."""
        dead = self._config.dead_letter_queue
        count = partial(self._queue.depths, self._queues(), whole=[dead])
        waiting = await asyncio.get_running_loop().run_in_executor(None, count)
        dead_letters = {dead: waiting.pop(dead)}
        if dead_letters[dead] < 0:  # the broker did not answer: no figure (llm_api_part_up says why)
            dead_letters = {}
        webhooks: dict[tuple[str, str], int] = {}
        try:
            for name, count in (await self._redis.hgetall(self._config.keys.webhook_counts)).items():
                endpoint, outcome = webhook_count_of(name.decode())
                webhooks[(endpoint, outcome)] = int(count)
        except (RedisError, OSError, ValueError) as exc:
            log.warning("could not read the webhook counts: %s", exc)
        try:
            scaling = {model: signals.as_dict() for model, signals in (await self._scaling.read(waiting)).items()}
        except GatewayError as exc:  # a part is down: the gauges are left out, the rest is scraped
            log.warning("could not read the scaling signals: %s", exc)
            scaling = {}
        report = self._readiness.current()
        parts = dict(report.checks) if report is not None else {}
        if self._database_up is not None:
            parts["database"] = {"ok": self._database_up()}
        return self._metrics.render(waiting, webhooks, self._batch_lines(), scaling, dead_letters, parts)
