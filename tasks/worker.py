"""What one worker process holds: its `Config` (read once, as it starts), a model-server
client per model (per server of a model with several, and their pools:
tasks/model/servers.py), and the record of the jobs it runs.

Every task of the worker's app is a `WorkerTask` (tasks/app.py), and reaches this
process's `Worker` as `self.worker`: the wiring binds it as the process starts
(tasks/wiring.py, with the Config read once: tasks/settings.py); a test binds its own
with `WorkerTask.bind_worker(Worker(config, ...))`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any, ClassVar

from celery import Task

from shared.config import Config
from shared.registry import Model, Registry, Server, load_registry
from shared.storage import redis_clients
from shared.storage.batch_files import BatchLines
from shared.storage.file_store import FileStore
from shared.webhooks import Endpoint, load_endpoints
from tasks.capacity import CapacityReporter, Load
from tasks.model import ModelClient
from tasks.model.cancel import Cancel
from tasks.model.coalesce import Coalescer
from tasks.model.pooled import PooledModel
from tasks.model.protocol import Embedded, Turn
from tasks.model.servers import PoolKeeper, ServerPool
from tasks.response_outcomes import ResponseOutcomes
from tasks.running import RunningJobs


class Worker:
    """The state of one worker process, built from its Config."""

    def __init__(
        self,
        config: Config,
        client: ModelClient | None = None,
        unacked_tags: Callable[[], list[str]] | None = None,
    ) -> None:
        self.config = config
        self.registry: Registry = load_registry(config)
        self._default = client  # INNER_LLM_URL's, or a test's
        self._routed: dict[str, ModelClient | PooledModel] = {}  # per model of the registry
        self._servers: dict[tuple[str, str], ModelClient] = {}  # per server of a model with a pool
        self._pools: dict[str, ServerPool] = {}
        self._keeper: PoolKeeper | None = None
        # The broker's delivery tags of the messages this process holds, renewed with
        # the leases on a Redis broker (the wiring's reading of Celery's worker state).
        self.unacked_tags = unacked_tags
        self._running: RunningJobs | None = None
        self._batch_lines: BatchLines | None = None
        self._file_store: FileStore | None = None
        self._outcomes: ResponseOutcomes | None = None
        # The webhook endpoints, by name (WEBHOOKS, WEBHOOKS_FILE).
        self.webhooks: dict[str, Endpoint] = {e.name: e for e in load_endpoints(config)}
        self._reporter: CapacityReporter | None = None
        self._pool_client: Any = None
        self._embedders: dict[str, Coalescer] = {}  # per model (and fallbacks): its embedding jobs' calls, joined
        self._lock = threading.Lock()

    def client(self, route: str | None = None) -> ModelClient | PooledModel:
        """What calls the model server(s) of `route` (a model of the registry; the
        default model without one), made on first use: the model's client, or, for a
        model with several servers or fallbacks, its `PooledModel`."""
        with self._lock:
            if route is None and self._default is not None:
                return self._default
            caller = self._routed.get(route or self.registry.default.name)
            if caller is None:
                model = self.registry.default if route is None else self.registry.by_name(route)
                if model.pooled:
                    caller = PooledModel(self.config, self.registry, model, self.pool, self.server_client)
                    if self._keeper is None:
                        self._keeper = PoolKeeper(self._all_pools, self._probe)
                else:
                    caller = self._make_client(model, model.servers[0])
                self._routed[model.name] = caller
            if route is None and isinstance(caller, ModelClient):
                self._default = caller
            return caller

    def embedder(self, route: str | None = None, fallbacks: list[str] | None = None) -> Coalescer:
        """What embeds the inputs of `route`'s jobs: their calls joined (tasks/model/coalesce.py).
        Jobs that may fall back only to some of the model's fallbacks (`fallbacks`: their
        project may not use the others) have calls of their own, which fall back to those
        alone."""
        name = route or self.registry.default.name
        if fallbacks is not None:
            name = json.dumps([name, fallbacks])
        with self._lock:
            embedder = self._embedders.get(name)
            if embedder is None:
                wait = self.config.embed_coalesce_wait_ms / 1000
                config = self.config
                embedder = Coalescer(
                    lambda inputs, options, turn, cancel: self._embed_call(
                        route, inputs, options, turn, cancel, fallbacks
                    ),
                    wait,
                    config.embed_coalesce_max_inputs,
                    config.embed_calls_in_flight,
                )
                self._embedders[name] = embedder
            return embedder

    def _embed_call(
        self,
        route: str | None,
        inputs: Any,
        options: dict[str, Any],
        turn: Turn,
        cancel: Cancel | None,
        fallbacks: list[str] | None = None,
    ) -> Embedded:
        """One embeddings call of `route`'s model: its server's; with several servers or
        fallbacks, on a slot of one, as a chat job (tasks/model/pooled.py)."""
        caller = self.client(route)
        if isinstance(caller, PooledModel):
            return caller.embeddings(inputs, options, turn, cancel, fallbacks)
        return caller.embeddings(inputs, options)

    def server_client(self, model: Model, server: Server) -> ModelClient:
        """The client of one server of a pooled model: one attempt a call (the pool fails over)."""
        with self._lock:
            client = self._servers.get((model.name, server.name))
            if client is None:
                client = self._servers[(model.name, server.name)] = self._make_client(model, server, attempts=1)
            return client

    def pool(self, model: Model) -> ServerPool:
        """The pool of `model`'s servers, as this process takes their slots."""
        holder = self.running.worker  # (takes the lock itself)
        with self._lock:
            pool = self._pools.get(model.name)
            if pool is None:
                pool = self._pools[model.name] = ServerPool(self.config, self._pool_redis(), model, holder)
            return pool

    def _all_pools(self) -> list[ServerPool]:
        with self._lock:
            return list(self._pools.values())

    def _probe(self, model: Model, server: Server) -> str | None:
        return self.server_client(model, server).probe(min(2.0, self.config.llm_connect_timeout))

    def _pool_redis(self) -> Any:
        # Each thread waiting for a slot blocks on a connection of its own.
        if self._pool_client is None:
            self._pool_client = redis_clients.sync_client(
                self.config,
                socket_connect_timeout=self.config.redis_connect_timeout,
                max_connections=self.config.worker_concurrency + 8,
            )
        return self._pool_client

    def _make_client(self, model: Model, server: Server, attempts: int | None = None) -> ModelClient:
        update: dict[str, Any] = {
            "inner_llm_url": server.url,
            "inner_llm_api_key": server.api_key,
            "inner_llm_priority_scheduling": model.priority_scheduling,
            "inner_llm_messages_api": model.messages_api,
        }
        if not self.registry.passthrough:
            update["default_model"] = model.served_name or model.name
        if attempts is not None:
            update["llm_max_retries"] = attempts - 1
        return ModelClient(self.config.model_copy(update=update))

    @property
    def batch_lines(self) -> BatchLines:
        """The records of batches' lines, in the file store (FILE_STORE_URL)."""
        with self._lock:
            if self._batch_lines is None:
                self._batch_lines = BatchLines(self._store())
            return self._batch_lines

    @property
    def response_outcomes(self) -> ResponseOutcomes:
        """Where responses' ends are kept beside Redis: their outcomes, their conversations' turns."""
        with self._lock:
            if self._outcomes is None:
                self._outcomes = ResponseOutcomes(self.config, self._store())
            return self._outcomes

    def _store(self) -> FileStore:
        """The file store (FILE_STORE_URL), made once; called holding the lock."""
        if self._file_store is None:
            self._file_store = FileStore.from_config(self.config)
        return self._file_store

    @property
    def running(self) -> RunningJobs:
        """The jobs running in this process (leases, cancellation), started on first use."""
        with self._lock:
            if self._running is None:
                self._running = RunningJobs(self.config, self.unacked_tags)
            return self._running

    @property
    def running_count(self) -> int:
        """Jobs running in this process (0 before any started)."""
        return self._running.count if self._running is not None else 0

    def report_capacity(self, slots: int, queues: list[str], load: Callable[[], tuple[int, int]]) -> None:
        """Report this process's `slots` for `queues` from now on, with its load: `load()`
        gives the slots busy and the messages held (tasks/capacity.py)."""

        def measured() -> Load:
            busy, held = load()
            return Load(busy=busy, running=self.running_count, held=held)

        reporter = CapacityReporter(self.config, self.running.redis, self.running.worker, slots, queues, measured)
        with self._lock:
            previous, self._reporter = self._reporter, reporter
        if previous is not None:
            previous.stop()
        reporter.start()

    def release(self) -> None:
        """Give up the leases of the jobs still running (the process is leaving)."""
        if self._running is not None:
            self._running.release()

    def close(self) -> None:
        """Close the model-server connections and stop the lease and cancel threads."""
        with self._lock:
            clients = [self._default, *self._routed.values(), *self._servers.values()]
            self._default, self._routed, self._servers, self._pools = None, {}, {}, {}
            running, self._running = self._running, None
            reporter, self._reporter = self._reporter, None
            keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.stop()
        if reporter is not None:
            reporter.stop()
        for client in clients:
            if isinstance(client, ModelClient):
                client.close()
        if running is not None:
            running.close()


class WorkerTask(Task):  # type: ignore[misc]
    """The base of the worker's tasks: each reaches this process's `Worker` as
    `self.worker`, bound by the wiring as the process starts."""

    _bound: ClassVar[Worker | None] = None
    _binding: ClassVar[threading.Lock] = threading.Lock()

    @property
    def worker(self) -> Worker:
        """This process's Worker."""
        return WorkerTask.bound_worker()

    @staticmethod
    def bound_worker() -> Worker:
        """The Worker bound to this process's tasks."""
        worker = WorkerTask._bound
        if worker is None:
            raise RuntimeError("no Worker bound to the tasks: tasks/wiring.py binds one as the worker process starts")
        return worker

    @staticmethod
    def bind_worker(worker: Worker | None) -> None:
        """Make `worker` the one this process's tasks use (the one bound before is closed)."""
        with WorkerTask._binding:
            previous, WorkerTask._bound = WorkerTask._bound, worker
        if previous is not None and previous is not worker:
            previous.close()
