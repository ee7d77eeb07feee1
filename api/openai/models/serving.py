"""The models ``GET /v1/models`` lists, and ``GET /v1/models/{model}`` shows: those the
request's tenant may use (shared/model_access.py)."""

import time

from api.errors import ModelNotFound
from api.jobs.route import JobRouting
from api.jobs.runner import JobRunner
from api.observability.server_timing import Timing
from shared.config import Config
from shared.contract import TaskName
from shared.model_access import serves
from shared.registry import UnknownModel
from shared.tenants import Tenant

MODELS_CACHE_SECONDS = 30


class ServedModels:
    """The models served: the registry's, or those the model server serves."""

    def __init__(self, config: Config, routing: JobRouting, runner: JobRunner) -> None:
        self._config = config
        self._routing = routing
        self._runner = runner

    async def served_models(self, tenant: Tenant, timing: Timing) -> list[str]:
        """The models of the registry `tenant` may use; with INNER_LLM_URL alone, those its
        model server serves (asked through the queue, kept 30 s) that it may use."""
        registry = self._routing.registry_for(tenant)
        if not registry.passthrough:
            return registry.names()
        window = int(time.time() // MODELS_CACHE_SECONDS)
        route, job = self._routing.route(TaskName.MODELS, f"models-{window}", {}, tenant)
        timing.ran(route)
        result = await self._runner.run(route, job, min(self._config.wait_timeout, 30.0))
        timing.ran(route, result)
        return [str(name) for name in result.get("models", []) if serves(registry, str(name))]

    def served_model(self, tenant: Tenant, model: str) -> str:
        """`model`, if a request of `tenant` naming it is served; ModelNotFound as a job
        naming it would be refused, else."""
        try:
            self._routing.registry_for(tenant).route(model)
        except UnknownModel as exc:
            raise ModelNotFound(str(exc)) from None
        return model
