"""The worker's tasks reach their process's Worker through their base class, bound once."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared.config import Config
from tasks import llm
from tasks.app import celery_app
from tasks.worker import Worker, WorkerTask

pytestmark = pytest.mark.unit


@pytest.fixture
def unbound() -> Iterator[None]:
    WorkerTask.bind_worker(None)
    yield
    WorkerTask.bind_worker(None)


def test_every_task_of_the_app_is_a_worker_task() -> None:
    celery_app.loader.import_default_modules()
    ours = [task for name, task in celery_app.tasks.items() if not name.startswith("celery.")]
    assert ours and all(isinstance(task, WorkerTask) for task in ours)


def test_a_task_run_before_a_worker_is_bound_fails_instead_of_reading_the_environment(unbound: None) -> None:
    with pytest.raises(RuntimeError, match="no Worker bound"):
        llm.models({})


def test_a_task_reaches_the_worker_bound_and_binding_another_closes_it(unbound: None) -> None:
    config = Config(_env_file=None, inner_llm_url="model:8000")  # type: ignore[call-arg]
    first, second = Worker(config), Worker(config)
    closed: list[Worker] = []
    first.close = lambda: closed.append(first)  # type: ignore[method-assign]
    WorkerTask.bind_worker(first)
    assert llm.generate.worker is first
    WorkerTask.bind_worker(second)
    assert llm.chat.worker is second and closed == [first]


def test_embedding_jobs_join_calls_only_with_jobs_of_the_same_fallbacks() -> None:
    worker = Worker(Config(_env_file=None, inner_llm_url="model:8000"))  # type: ignore[call-arg]
    try:
        own = worker.embedder("default")
        assert worker.embedder("default", None) is own and worker.embedder(None) is own
        fewer = worker.embedder("default", [])
        assert fewer is not own and worker.embedder("default", []) is fewer
        assert worker.embedder("default", ["other"]) not in (own, fewer)
    finally:
        worker.close()
