"""The parts of one API process, built from its `Config` and started and stopped together."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import redis.asyncio as aioredis

from api.batches.events import Events
from api.batches.files import Files
from api.batches.keeper import BatchKeeper
from api.batches.store import Batches
from api.jobs.queue import JobQueue
from api.jobs.result_waiter import ResultWaiter, redis_client
from api.jobs.runner import JobRunner
from api.jobs.store import JobStore
from api.observability.metrics import Metrics
from api.observability.scaling import Scaling
from api.schemas.limits import RequestModels, request_models
from api.tenancy.fair_share import FairShare
from api.tenancy.guard import Guard
from api.tenancy.quotas import Quotas
from shared.config import Config
from shared.registry import Registry, load_registry
from shared.storage.file_store import FileStore
from shared.telemetry import tracing


@dataclass(frozen=True)
class Services:
    """What the routes are given (as FastAPI dependencies, api/deps.py)."""

    config: Config
    registry: Registry
    metrics: Metrics
    redis: aioredis.Redis  # the command client: job store, guard, readiness
    queue: JobQueue  # publishing to the broker
    store: JobStore  # jobs' claims and status in Redis
    waiter: ResultWaiter  # results, through one pub/sub connection
    runner: JobRunner  # claim, publish, await
    guard: Guard  # keys and rate limit
    models: RequestModels  # the request bodies, with the deployment's limits
    files: Files  # files, in the file store
    batches: Batches  # batches, in the file store
    keeper: BatchKeeper  # drives the unfinished batches
    events: Events  # webhook events
    fair: FairShare  # which models are contended; their dispatchers by tenant
    scaling: Scaling  # the signals to scale workers on

    @classmethod
    def build(cls, config: Config) -> Services:
        """Every part, unconnected: `running()` connects them."""
        registry = load_registry(config)
        tracing.setup(config, "llm-api")
        metrics = Metrics()
        redis = redis_client(config)
        guard = Guard(config, redis)
        for tenant in guard.tenants.named.values():  # each tenant's refusals, from 0
            if Quotas.applies(tenant):
                for quota in ("tokens_per_minute", "tokens_per_day", "jobs_in_flight"):
                    metrics.quota_refusals.labels(tenant.name, quota)
        fair = FairShare(config, guard.tenants, registry.queues, redis)
        queue = JobQueue(config, fair.tenant_queues)
        store = JobStore(config, redis)
        waiter = ResultWaiter(config, redis)
        events = Events(config, queue)
        runner = JobRunner(config, registry, queue, store, waiter, metrics, redis, fair, events.for_jobs)
        models = request_models(config)
        files = Files(config, FileStore.from_config(config), registry, models)
        batches = Batches(files)
        keeper = BatchKeeper(config, batches, files, runner, redis, registry, models, events.emit)
        batches.woken = keeper.wake
        return cls(
            config, registry, metrics, redis, queue, store, waiter, runner, guard, models, files, batches, keeper,
            events, fair, Scaling(config, registry, queue, fair, redis),
        )  # fmt: skip

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Services]:
        """Connect at start-up (the broker's first connection made now, not by the first
        request), disconnect at shut-down."""
        await self.waiter.start()
        await asyncio.get_running_loop().run_in_executor(None, self.queue.warm_up)
        # On a Redis broker, messages lost between the broker and a killed worker.
        sweeper = None if self.config.uses_rabbitmq else asyncio.create_task(self.runner.find_lost())
        keeper = asyncio.create_task(self.keeper.run_forever(), name="batch keeper")
        fair = asyncio.create_task(self.fair.run(self.queue.celery), name="fair share")
        try:
            yield self
        finally:
            keeper.cancel()
            fair.cancel()
            await asyncio.gather(keeper, fair, return_exceptions=True)
            if sweeper is not None:
                sweeper.cancel()
                await asyncio.gather(sweeper, return_exceptions=True)
            await self.waiter.close()
            await self.runner.close()
            await self.redis.aclose(close_connection_pool=True)
            self.queue.close()
            tracing.shutdown()
