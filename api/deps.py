"""What the routes depend on, as FastAPI dependencies: the parts of the API process
(api/services.py), which the router's lifespan puts on the app's state."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.batches.events import Events
from api.batches.files import Files
from api.batches.store import Batches
from api.jobs.queue import JobQueue
from api.jobs.runner import JobRunner
from api.jobs.store import JobStore
from api.observability.metrics import Metrics
from api.services import Services
from shared.config import Config
from shared.registry import Registry
from shared.tenants import DEFAULT_TENANT, EVERYONE, Owner, Tenant


def services_of(request: Request) -> Services:
    """The API's parts, as its lifespan started them."""
    found: Services | None = getattr(request.app.state, "llm_gateway", None)
    if found is None:
        raise RuntimeError("the gateway's router is used without its lifespan having run")
    return found


# The dependencies are coroutines: FastAPI runs a plain function's dependency on its
# thread pool, a thread hop per dependency per request, which cost the API measurably
# more CPU per job (docs/benchmark.md).
async def services(request: Request) -> Services:
    """The API's parts (a dependency)."""
    return services_of(request)


async def _runner(parts: Annotated[Services, Depends(services)]) -> JobRunner:
    return parts.runner


async def _store(parts: Annotated[Services, Depends(services)]) -> JobStore:
    return parts.store


async def _registry(parts: Annotated[Services, Depends(services)]) -> Registry:
    return parts.registry


async def _metrics(parts: Annotated[Services, Depends(services)]) -> Metrics:
    return parts.metrics


async def _queue(parts: Annotated[Services, Depends(services)]) -> JobQueue:
    return parts.queue


async def _config(parts: Annotated[Services, Depends(services)]) -> Config:
    return parts.config


async def _files(parts: Annotated[Services, Depends(services)]) -> Files:
    return parts.files


async def _batches(parts: Annotated[Services, Depends(services)]) -> Batches:
    return parts.batches


async def _events(parts: Annotated[Services, Depends(services)]) -> Events:
    return parts.events


async def _owner(request: Request) -> Owner:
    # Set by the guard: whose files and batches the request sees.
    return getattr(request.state, "owner", EVERYONE)


async def _tenant(request: Request) -> Tenant:
    # Set by the guard: the tenant of the request's key (the default tenant without keys).
    return getattr(request.state, "tenant", None) or Tenant(DEFAULT_TENANT)


ServicesDep = Annotated[Services, Depends(services)]
RunnerDep = Annotated[JobRunner, Depends(_runner)]
StoreDep = Annotated[JobStore, Depends(_store)]
RegistryDep = Annotated[Registry, Depends(_registry)]
MetricsDep = Annotated[Metrics, Depends(_metrics)]
QueueDep = Annotated[JobQueue, Depends(_queue)]
ConfigDep = Annotated[Config, Depends(_config)]
FilesDep = Annotated[Files, Depends(_files)]
BatchesDep = Annotated[Batches, Depends(_batches)]
EventsDep = Annotated[Events, Depends(_events)]
OwnerDep = Annotated[Owner, Depends(_owner)]
TenantDep = Annotated[Tenant, Depends(_tenant)]
