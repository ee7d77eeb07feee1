"""Where a job goes: its model, that model's queue, the name its model server knows it
by, and whose it is. Computed once, as the request is received (`JobRouting.route`),
and handed down to admission, the queue, the metrics and the logs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from api.errors import ModelNotFound, QueueMismatch, QueueNotFound
from shared.config import Config
from shared.contract import DEFAULT_PRIORITY, INTERNAL_TASKS
from shared.registry import Registry, UnknownModel, UnknownQueue
from shared.tenants import Tenant, job_key


@dataclass(frozen=True)
class JobRoute:
    """One job's way through the gateway."""

    task: str  # the contract's task name
    job_id: str  # as the client named it
    key: str  # its id in Redis and on the broker: the tenant's (shared.tenants.job_key)
    tenant: Tenant
    model: str  # as logs and spans name it: the registry's name, or the name the request gave
    label: str  # as metrics name it: a model of the registry, never a name a client made up
    queue: str  # its model's queue
    priority: int | None = None  # its meta's: 0 (batch) .. 9 (most urgent); None: the default
    internal: bool = False  # the gateway's own job (llm.models): no tenant's, under no quota

    def log_context(self) -> dict[str, str]:
        """What every log line about the job names (shared/telemetry/logs.py)."""
        return {"job_id": self.key, "model": self.model, "queue": self.queue, "tenant": self.tenant.name}


class JobRouting:
    """Routes jobs to their models' queues by the registry (one per API process)."""

    def __init__(self, config: Config, registry: Registry) -> None:
        self._config = config
        self._registry = registry

    def route(self, task: str, job_id: str, job: dict[str, Any], tenant: Tenant) -> tuple[JobRoute, dict[str, Any]]:
        """The job's route, and the job as its model's workers take it (its model named
        as the model server knows it, its tenant written in). 404 for a model the
        registry does not list."""
        meta = job.get("meta")
        if task in INTERNAL_TASKS or not isinstance(meta, dict):
            # The gateway's own jobs (llm.models) are no tenant's: one answers every tenant.
            default = self._registry.default
            route = JobRoute(task, job_id, job_id, tenant, default.name, default.name, default.queue, internal=True)
            return route, job
        requested = meta.get("model")
        try:
            model = self._registry.route(requested)
        except UnknownModel as exc:
            raise ModelNotFound(str(exc)) from None
        key = job_key(tenant.name, job_id)
        priority = meta.get("priority") if isinstance(meta.get("priority"), int) else None
        most = tenant.quotas.max_priority
        if most is not None and (DEFAULT_PRIORITY if priority is None else priority) > most:
            # Above its tenant's highest: run at that highest, not refused (a client sending
            # a fixed priority keeps working; it only cannot jump other tenants' jobs).
            priority, meta = most, {**meta, "priority": most}
            job = {**job, "meta": meta}
        whose: dict[str, Any] = {"tenant": tenant.name}
        if tenant.weight != 1.0:  # its share of the turns for a model's server slots
            whose["weight"] = tenant.weight
        if tenant.key_id:  # its usage is counted to the key it was sent with
            whose["key_id"] = tenant.key_id
        if self._registry.passthrough:
            # One model server without a registry: the request's name goes to it as given
            # (and names it in the logs), and every name is counted as the one model.
            named = requested or model.name
            route = JobRoute(task, job_id, key, tenant, named, model.name, model.queue, priority)
            return route, {**job, **whose}
        served = model.served_name or model.name
        sent = {**job, "meta": {**meta, "model": served}, "route": model.name, **whose}
        if job.get("fallbacks") is not None:
            sent["fallbacks"] = self._fallbacks(job["fallbacks"])
        return JobRoute(task, job_id, key, tenant, model.name, model.name, model.queue, priority), sent

    def _fallbacks(self, asked: Any) -> list[str]:
        """The models a request names to fall back to, as the registry names them; 404
        naming the field for one it does not list."""
        names = []
        for name in asked:
            try:
                names.append(self._registry.route(str(name)).name)
            except UnknownModel as exc:
                raise ModelNotFound(f"fallbacks: {exc}") from None
        return names

    def label(self, job: dict[str, Any]) -> str:
        """The model a job is for, as metrics name it (a job not routed yet: a batch's
        line read back); "unknown" for a model the registry does not list."""
        meta = job.get("meta")
        try:
            return self._registry.route(meta.get("model") if isinstance(meta, dict) else None).name
        except UnknownModel:
            return "unknown"

    def meta_for_queue(self, queue_name: str, meta: dict[str, Any]) -> dict[str, Any]:
        """`meta` of a job sent with ``?queue_name=`` (ProtoLLM's SDK): naming the model
        served from that queue. 404 for a queue no model is served from; 422 when
        `meta.model` names a model of another queue."""
        try:
            model = self._registry.by_queue(queue_name, self._config.queue_name)
        except UnknownQueue as exc:
            raise QueueNotFound(str(exc)) from None
        requested = meta.get("model")
        if not requested:
            named = not self._registry.passthrough and model is not self._registry.default
            return {**meta, "model": model.name} if named else meta
        try:
            chosen = self._registry.route(requested)
        except UnknownModel as exc:
            raise ModelNotFound(str(exc)) from None
        if chosen.queue != model.queue and chosen is not model:
            raise QueueMismatch(
                f"queue_name {queue_name!r} is model {model.name!r}'s queue, but meta.model asks for"
                f" {requested!r} (queue {chosen.queue!r}); give one of them, or both naming the same model"
            )
        return meta
