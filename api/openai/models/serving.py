"""The models ``GET /v1/models`` lists."""

import time

from api.jobs.route import JobRouting
from api.jobs.runner import JobRunner
from api.observability.server_timing import Timing
from shared.config import Config
from shared.contract import TaskName
from shared.registry import Registry
from shared.tenants import Tenant

MODELS_CACHE_SECONDS = 30


class ServedModels:
    """The models served: the registry's, or those the model server serves."""

    def __init__(self, config: Config, routing: JobRouting, runner: JobRunner) -> None:
        self._config = config
        self._routing = routing
        self._runner = runner

    async def served_models(self, registry: Registry, tenant: Tenant, timing: Timing) -> list[str]:
        """The models of the registry; with INNER_LLM_URL alone, those its model server
        serves (asked through the queue, kept 30 s)."""
        if not registry.passthrough:
            return registry.names()
        window = int(time.time() // MODELS_CACHE_SECONDS)
        route, job = self._routing.route(TaskName.MODELS, f"models-{window}", {}, tenant)
        timing.ran(route)
        result = await self._runner.run(route, job, min(self._config.wait_timeout, 30.0))
        timing.ran(route, result)
        return [str(name) for name in result.get("models", [])]
