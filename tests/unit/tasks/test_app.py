"""The workers' Celery app: the tasks it registers are the contract's."""

from __future__ import annotations

import pytest

from shared.contract import TaskName
from tasks.app import celery_app

pytestmark = pytest.mark.unit


def test_the_workers_register_exactly_the_contracts_task_names() -> None:
    celery_app.loader.import_default_modules()  # the app's `include`, as a worker imports them
    registered = {name for name in celery_app.tasks if not name.startswith("celery.")}
    assert registered == set(TaskName)
