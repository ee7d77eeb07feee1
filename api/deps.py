"""What the routes depend on, as FastAPI dependencies: the parts of the API process
(api/services.py), which the router's lifespan puts on the app's state."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.job_queue import JobQueue
from api.job_store import JobStore
from api.metrics import Metrics
from api.runner import JobRunner
from api.services import Services
from gateway.config import Config
from gateway.registry import Registry


def services(request: Request) -> Services:
    """The API's parts, as its lifespan started them."""
    found: Services | None = getattr(request.app.state, "llm_gateway", None)
    if found is None:
        raise RuntimeError("the gateway's router is used without its lifespan having run")
    return found


def _runner(parts: Annotated[Services, Depends(services)]) -> JobRunner:
    return parts.runner


def _store(parts: Annotated[Services, Depends(services)]) -> JobStore:
    return parts.store


def _registry(parts: Annotated[Services, Depends(services)]) -> Registry:
    return parts.registry


def _metrics(parts: Annotated[Services, Depends(services)]) -> Metrics:
    return parts.metrics


def _queue(parts: Annotated[Services, Depends(services)]) -> JobQueue:
    return parts.queue


def _config(parts: Annotated[Services, Depends(services)]) -> Config:
    return parts.config


ServicesDep = Annotated[Services, Depends(services)]
RunnerDep = Annotated[JobRunner, Depends(_runner)]
StoreDep = Annotated[JobStore, Depends(_store)]
RegistryDep = Annotated[Registry, Depends(_registry)]
MetricsDep = Annotated[Metrics, Depends(_metrics)]
QueueDep = Annotated[JobQueue, Depends(_queue)]
ConfigDep = Annotated[Config, Depends(_config)]
