"""The parts of one API process, built from its `Config`, each given what it needs
through its constructor, and started and stopped together."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial

import redis.asyncio as aioredis

from api.admin.usage_flush import UsageFlush
from api.jobs.admission import Admission
from api.jobs.queue import JobQueue
from api.jobs.recovery import LostJobs
from api.jobs.requeues import Published, Requeues
from api.jobs.result_waiter import ResultWaiter
from api.jobs.route import JobRouting
from api.jobs.runner import JobRunner
from api.jobs.store import JobStore
from api.jobs.webhook_events import WebhookEvents
from api.limits import RequestModels, request_models
from api.observability.metrics import Metrics
from api.observability.readiness import Readiness
from api.observability.scaling import Scaling
from api.observability.scrape import Scrape
from api.openai.batches.doorbell import Doorbell
from api.openai.batches.keeper import BatchKeeper
from api.openai.batches.store import Batches
from api.openai.batches.token_limits import BatchTokenLimits
from api.openai.files.store import Files
from api.openai.responses.input_tokens import TokenCounter
from api.stopping import stop
from api.tenancy.control_sync import ControlSync
from api.tenancy.fair_share import FairShare
from api.tenancy.guard import Guard
from api.tenancy.quotas import Quotas
from api.tenancy.spend import MonthSpend
from shared.config import Config
from shared.contract.responses import record_ttl
from shared.control.database import engine_for
from shared.control.store import ControlStore
from shared.control.usage import UsageHistory
from shared.registry import Registry, load_registry
from shared.storage import redis_clients
from shared.storage.conversation_files import ConversationFiles
from shared.storage.file_store import FileStore
from shared.storage.response_files import KeptResponses
from shared.telemetry import tracing

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Services:
    """Every part of one API process; the routers are given the ones they use (api/main.py)."""

    config: Config
    registry: Registry
    metrics: Metrics
    redis: aioredis.Redis  # the command client: job store, guard, quotas, readiness
    stream_reader: aioredis.Redis  # blocking reads of answers' streams, on a pool of their own
    queue: JobQueue  # publishing to the broker
    store: JobStore  # jobs' claims, status and cancel in Redis
    waiter: ResultWaiter  # results, through one pub/sub connection
    routing: JobRouting  # a job's model and queue
    runner: JobRunner  # admit, publish, await
    lost: LostJobs  # jobs a Redis broker lost, queued again
    guard: Guard  # keys and rate limits
    models: RequestModels  # the request bodies, with the deployment's limits
    files: Files  # files, in the file store
    batches: Batches  # batches, in the file store
    keeper: BatchKeeper  # drives the unfinished batches
    events: WebhookEvents  # webhook events the API sends
    fair: FairShare  # which models are contended; their dispatchers by tenant
    scaling: Scaling  # the signals to scale workers on
    scrape: Scrape  # what /metrics reads
    readiness: Readiness  # what /ready answers, checked in the background
    quotas: Quotas  # tenants' quotas (its streams' places renewed while they are read)
    counter: TokenCounter  # counts of tokens, asked of the model servers
    kept: KeptResponses  # stored responses, in the file store (swept as they expire)
    conversations: ConversationFiles  # conversations, in the file store
    control: ControlStore  # the control plane's database: projects, keys, audit log
    control_sync: ControlSync  # the guard's projects and keys, kept as the database has them
    spend: MonthSpend  # what projects with a spend limit spent this month, as the usage history says
    usage_history: UsageHistory  # usage by minute, hour and day, in the control plane's database
    usage_flush: UsageFlush  # moves the workers' counts of finished minutes there from Redis

    @classmethod
    def build(cls, config: Config) -> Services:
        """Every part, unconnected: `running()` connects them."""
        registry = load_registry(config)
        tracing.setup(config, "llm-api")
        metrics = Metrics()
        redis = redis_clients.api_client(config)
        stream_reader = redis_clients.stream_reader_client(config)
        guard = Guard(config, redis, metrics)
        control = ControlStore(engine_for(config.control_database, config.redis_connect_timeout))
        control_sync = ControlSync(config, control, guard, redis)
        usage_history = UsageHistory(control.engine)
        for tenant in guard.tenants.named.values():  # each tenant's refusals, from 0
            if Quotas.applies(tenant):
                for quota in ("tokens_per_minute", "tokens_per_day", "jobs_in_flight", "streams_in_flight"):
                    metrics.quota_refusals.labels(tenant.name, quota)
            if tenant.quotas.requests_per_minute:
                metrics.quota_refusals.labels(tenant.name, "requests_per_minute")
        fair = FairShare(config, guard.tenants, registry.queues, redis)
        queue = JobQueue(config, fair.tenant_queues)
        store = JobStore(config, redis)
        waiter = ResultWaiter(config, redis)
        events = WebhookEvents(config, queue)
        routing = JobRouting(config, registry)
        spend = MonthSpend(config, control, guard.tenants, redis)
        quotas = Quotas(config, redis, metrics, shared=len(guard.tenants.named) > 1, spent=spend)
        admission = Admission(config, store, quotas)
        published, requeues = Published(), Requeues(metrics)
        runner = JobRunner(
            config, admission, store, queue, waiter, fair, metrics, published, requeues, stream_reader,
            events.for_jobs,
        )  # fmt: skip
        lost = LostJobs(config, redis, queue, waiter, published, requeues, fair)
        models = request_models(config)
        file_store = FileStore.from_config(config)
        files = Files(config, file_store, registry, models)
        doorbell = Doorbell()
        batches = Batches(files, doorbell)
        token_limits = BatchTokenLimits(
            config, redis, lambda tenant: guard.tenants.get(tenant).model_limits, routing.label
        )
        keeper = BatchKeeper(
            config, batches, files, runner, routing, lost, redis, registry, models, doorbell, events.emit,
            fair.held_back, token_limits, guard.tenants,
        )  # fmt: skip
        scaling = Scaling(config, registry, queue, fair, redis)
        readiness = Readiness(redis, queue, registry)
        scrape = Scrape(config, metrics, queue, lambda: [*registry.queues, *fair.tenant_queues], redis, scaling,
                        keeper.line_counts, readiness, lambda: control_sync.database_up)  # fmt: skip
        return cls(
            config, registry, metrics, redis, stream_reader, queue, store, waiter, routing, runner, lost, guard,
            models, files, batches, keeper, events, fair, scaling, scrape, readiness, quotas, TokenCounter(config),
            KeptResponses(file_store, record_ttl(config)), ConversationFiles(file_store),
            control, control_sync, spend, usage_history,
            UsageFlush(config, usage_history, redis, partial(control_sync.call, bounded=False)),
        )  # fmt: skip

    async def _sweep_responses(self) -> None:
        """Every RESPONSE_SWEEP_SECONDS, remove the stored responses older than
        RESPONSE_TTL that no one read since (a read removes one itself): every API
        process sweeps, each removal done at most once whoever does it."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                removed = await loop.run_in_executor(None, self.kept.sweep)
                if removed:
                    log.info("removed %d expired responses from the file store", removed)
            except Exception as exc:  # noqa: BLE001 - the next sweep tries again
                log.warning("the sweep of expired responses failed: %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(self.config.response_sweep_seconds)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Services]:
        """Connect at start-up (the broker's first connection made now, not by the first
        request; the control plane's database migrated and read), disconnect at shut-down."""
        await self.control_sync.start()
        await self.spend.refresh()
        await self.waiter.start()
        await asyncio.get_running_loop().run_in_executor(None, self.queue.warm_up)
        tasks = [
            asyncio.create_task(self.lost.run(), name="lost jobs"),  # on a Redis broker
            asyncio.create_task(self.keeper.run_forever(), name="batch keeper"),
            asyncio.create_task(self.fair.run(self.queue.celery, self.queue.add_queues), name="fair share"),
            asyncio.create_task(self.quotas.keep_streams(), name="streams' places"),
            asyncio.create_task(self._sweep_responses(), name="responses' sweep"),
            asyncio.create_task(self.control_sync.run(), name="control plane"),
            asyncio.create_task(self.spend.run(), name="month's spend"),
            asyncio.create_task(self.usage_flush.run(), name="usage history"),
        ]
        try:
            yield self
        finally:
            await stop(tasks)
            await self.readiness.close()
            await self.counter.close()
            await self.waiter.close()
            await self.stream_reader.aclose()
            await self.redis.aclose(close_connection_pool=True)
            self.queue.close()
            self.control_sync.close()
            self.control.engine.dispose()
            tracing.shutdown()
