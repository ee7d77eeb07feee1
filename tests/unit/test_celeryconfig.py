"""celeryconfig.py: Celery's settings by module name, built from the process's Config."""

from __future__ import annotations

import importlib
import sys

import pytest

from shared.broker.settings import celery_settings
from shared.config import Config
from tasks.settings import process_config

pytestmark = pytest.mark.unit


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ["ENV_FILE", *(field.upper() for field in Config.model_fields)]:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_celeryconfig_module_holds_only_lowercase_celery_keys(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ENV_FILE", "")
    clean_env.setenv("QUEUE_NAME", "by-module")
    sys.modules.pop("celeryconfig", None)
    process_config.cache_clear()  # read once per process: this test's environment is read anew
    module = importlib.import_module("celeryconfig")
    # Celery hides names starting with "_" from its settings (`celery inspect conf`).
    keys = {k for k in vars(module) if not k.startswith("_")}
    worker_only = {"result_backend", "worker_consumer", "result_backend_thread_safe"}
    assert keys == {*celery_settings(Config.read_from_env()), *worker_only}
    assert module.task_default_queue == "by-module"
    # The worker's classes, named from the classes: importable as named.
    assert module.result_backend.startswith("tasks.result_store:ResultStore+redis://")
    assert module.worker_consumer == "tasks.dead_letters:Consumer"
    process_config.cache_clear()  # the next reader reads its own environment
