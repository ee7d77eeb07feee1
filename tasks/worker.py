"""What one worker process holds: its `Config` (read once, as it starts), a model-server
client per model, and the record of the jobs it runs.

The task bodies (tasks/llm.py) and the worker's wiring (tasks/wiring.py) take what
they need from `current()`; a test builds its own with `use(Worker(config, ...))`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from shared.config import Config
from shared.registry import Registry, load_registry
from shared.storage.batch_files import BatchLines
from shared.storage.file_store import FileStore
from shared.webhooks import Endpoint, load_endpoints
from tasks.capacity import CapacityReporter, Load
from tasks.model import ModelClient
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
        self._routed: dict[str, ModelClient] = {}  # per model of the registry (MODELS, MODELS_FILE)
        # The broker's delivery tags of the messages this process holds, renewed with
        # the leases on a Redis broker (the wiring's reading of Celery's worker state).
        self.unacked_tags = unacked_tags
        self._running: RunningJobs | None = None
        self._batch_lines: BatchLines | None = None
        # The webhook endpoints, by name (WEBHOOKS, WEBHOOKS_FILE).
        self.webhooks: dict[str, Endpoint] = {e.name: e for e in load_endpoints(config)}
        self._reporter: CapacityReporter | None = None
        self._lock = threading.Lock()

    def client(self, route: str | None = None) -> ModelClient:
        """The client of the model server of `route` (a model of the registry;
        INNER_LLM_URL's without one), made on first use."""
        with self._lock:
            if route is None:
                if self._default is None:
                    self._default = ModelClient(self.config)
                return self._default
            client = self._routed.get(route)
            if client is None:
                model = self.registry.by_name(route)
                served = model.served_name or model.name
                update = {
                    "inner_llm_url": model.url,
                    "inner_llm_api_key": model.api_key,
                    "default_model": served,
                    "inner_llm_priority_scheduling": model.priority_scheduling,
                }
                client = self._routed[route] = ModelClient(self.config.model_copy(update=update))
            return client

    @property
    def batch_lines(self) -> BatchLines:
        """The records of batches' lines, in the file store (FILE_STORE_URL)."""
        with self._lock:
            if self._batch_lines is None:
                self._batch_lines = BatchLines(FileStore.from_config(self.config))
            return self._batch_lines

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
            clients = [self._default, *self._routed.values()]
            self._default, self._routed = None, {}
            running, self._running = self._running, None
            reporter, self._reporter = self._reporter, None
        if reporter is not None:
            reporter.stop()
        for client in clients:
            if client is not None:
                client.close()
        if running is not None:
            running.close()


_current: Worker | None = None
_current_lock = threading.Lock()


def current() -> Worker:
    """This process's worker state; made from the environment on first use."""
    global _current
    with _current_lock:
        if _current is None:
            _current = Worker(Config.read_from_env())
        return _current


def use(worker: Worker | None) -> None:
    """Make `worker` this process's (the one before is closed)."""
    global _current
    with _current_lock:
        previous, _current = _current, worker
    if previous is not None and previous is not worker:
        previous.close()
