"""Configuration: the spec's variables, `.env`, and the Celery settings built from them."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

from shared.broker.settings import celery_settings
from shared.config import Config
from tasks.settings import process_config

pytestmark = pytest.mark.unit

SPEC_ENV = """\
INNER_LLM_URL=localhost:8670
REDIS_HOST=localhost
REDIS_PORT=6379
REDIS_PREFIX=llm-api
RABBIT_MQ_HOST=localhost
RABBIT_MQ_PORT=5672
RABBIT_MQ_LOGIN=admin
RABBIT_MQ_PASSWORD=admin
QUEUE_NAME=llm-api-queue
"""

SPEC_VARIABLES = [
    "RABBIT_MQ_HOST",
    "RABBIT_MQ_PORT",
    "RABBIT_MQ_LOGIN",
    "RABBIT_MQ_PASSWORD",
    "QUEUE_NAME",
    "REDIS_HOST",
    "REDIS_PORT",
    "REDIS_PREFIX",
    "INNER_LLM_URL",
]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in [*SPEC_VARIABLES, "ENV_FILE", *(f.upper() for f in Config.model_fields)]:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_the_spec_env_file_works_as_written(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(SPEC_ENV)
    clean_env.chdir(tmp_path)
    config = Config.read_from_env()
    assert config.inner_llm_url == "http://localhost:8670"
    assert config.broker_url == "amqp://admin:admin@localhost:5672/%2F"
    assert config.redis_url == "redis://localhost:6379/0"
    assert config.queue_name == "llm-api-queue"
    assert config.keys.result("abc") == "llm-api:celery-task-meta-abc"


def test_environment_overrides_the_env_file(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "my.env").write_text(SPEC_ENV)
    clean_env.setenv("QUEUE_NAME", "from-env")
    clean_env.setenv("ENV_FILE", str(tmp_path / "my.env"))
    config = Config.read_from_env()
    assert config.queue_name == "from-env"
    assert config.rabbit_mq_login == "admin"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("localhost:8670", "http://localhost:8670"),
        ("http://gpu-box:8000/v1", "http://gpu-box:8000"),
        ("https://models.example/", "https://models.example"),
    ],
)
def test_inner_llm_url_forms(given: str, expected: str) -> None:
    assert Config(_env_file=None, inner_llm_url=given).inner_llm_url == expected  # type: ignore[call-arg]


def test_passwords_are_quoted_in_urls_and_hidden_in_repr() -> None:
    config = Config(_env_file=None, rabbit_mq_host="mq", rabbit_mq_password="p@ss/word", redis_password="s3cr:t")  # type: ignore[call-arg]
    assert config.broker_url == "amqp://guest:p%40ss%2Fword@mq:5672/%2F"
    assert config.redis_url == "redis://:s3cr%3At@localhost:6379/0"
    assert "p@ss" not in repr(config) and "s3cr" not in repr(config)


def test_without_rabbitmq_the_broker_is_redis_and_held_messages_are_leased() -> None:
    config = Config(_env_file=None, redis_host="cache", llm_deadline=1800, job_lease=20)  # type: ignore[call-arg]
    settings = celery_settings(config)
    assert settings["broker_url"] == "redis://cache:6379/0"
    assert settings["broker_transport"] == "shared.broker.redis_transport:Transport"
    json.dumps(settings["broker_transport"])  # settings travel as JSON (celery inspect conf, Flower)
    # Workers renew the messages they hold (tasks/running.py): a message is handed out
    # again a lease after its worker stopped renewing it, however long its job runs.
    options = settings["broker_transport_options"]
    assert options["visibility_timeout"] == 20
    assert options["unacked_restore_interval"] * options["unacked_restore_throttle"] < 20
    assert options["global_keyprefix"] == "llm-api:"


def test_rabbitmq_consumers_may_hold_a_message_longer_than_the_longest_job() -> None:
    config = Config(_env_file=None, rabbit_mq_host="mq", llm_deadline=3600)  # type: ignore[call-arg]
    queue, webhooks = celery_settings(config)["task_queues"]
    assert queue.consumer_arguments["x-consumer-timeout"] > 3600 * 1000
    # A webhook delivery waiting for its next try is held by a worker (Celery's countdown).
    assert webhooks.name == "llm-api-queue.webhooks"
    assert webhooks.consumer_arguments["x-consumer-timeout"] > config.webhook_max_backoff * 1000


def test_celery_settings_make_long_jobs_safe() -> None:
    config = Config(_env_file=None, rabbit_mq_host="mq", queue_name="jobs", worker_concurrency=80)  # type: ignore[call-arg]
    settings = celery_settings(config)
    queue, _webhooks = settings["task_queues"]
    assert (queue.name, queue.durable, settings["task_default_queue"]) == ("jobs", True, "jobs")
    assert settings["task_acks_late"]
    assert settings["worker_prefetch_multiplier"] == 1
    assert settings["task_default_delivery_mode"] == "persistent"
    assert settings["broker_transport_options"] == {}  # confirms: see test_job_queue
    assert (settings["worker_pool"], settings["worker_concurrency"]) == ("threads", 80)
    assert settings["worker_send_task_events"]
    assert settings["broker_channel_error_retry"]  # a consumer timeout does not kill the worker
    assert not settings["worker_enable_prefetch_count_reduction"]
    assert settings["result_backend_transport_options"] == {"global_keyprefix": "llm-api:"}


def test_celeryconfig_module_holds_only_lowercase_celery_keys(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ENV_FILE", "")
    clean_env.setenv("QUEUE_NAME", "by-module")
    sys.modules.pop("celeryconfig", None)
    process_config.cache_clear()  # read once per process: this test's environment is read anew
    module = importlib.import_module("celeryconfig")
    # Celery hides names starting with "_" from its settings (`celery inspect conf`).
    keys = {k for k in vars(module) if not k.startswith("_")}
    assert keys == {*celery_settings(Config.read_from_env()), "result_backend", "worker_consumer"}
    assert module.task_default_queue == "by-module"
    # The worker's classes, named from the classes: importable as named.
    assert module.result_backend.startswith("tasks.result_store:ResultStore+redis://")
    assert module.worker_consumer == "tasks.dead_letters:Consumer"
    process_config.cache_clear()  # the next reader reads its own environment


@pytest.mark.unit
@pytest.mark.parametrize("url", ["ftp://x", "llm.example.com", "https://user:pw@llm.example.com", "https://"])
def test_public_base_url_is_an_http_address_without_credentials(url: str) -> None:
    with pytest.raises(ValueError, match="PUBLIC_BASE_URL"):
        Config(_env_file=None, public_base_url=url)  # type: ignore[call-arg]
    assert Config(_env_file=None, public_base_url="https://llm.example.com/").public_base_url == (  # type: ignore[call-arg]
        "https://llm.example.com"
    )
