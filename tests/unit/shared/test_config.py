"""Configuration: the spec's variables, `.env`, URLs and passwords, the clustered setup's settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from shared.config import Config

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


@pytest.mark.unit
@pytest.mark.parametrize("url", ["ftp://x", "llm.example.com", "https://user:pw@llm.example.com", "https://"])
def test_public_base_url_is_an_http_address_without_credentials(url: str) -> None:
    with pytest.raises(ValueError, match="PUBLIC_BASE_URL"):
        Config(_env_file=None, public_base_url=url)  # type: ignore[call-arg]
    assert Config(_env_file=None, public_base_url="https://llm.example.com/").public_base_url == (  # type: ignore[call-arg]
        "https://llm.example.com"
    )


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"rabbit_mq_host": "rabbit-1,rabbit-2:amqp"}, "not host:port: 'rabbit-2:amqp'"),
        ({"redis_sentinels": "s1:26379"}, "REDIS_SENTINELS needs RABBIT_MQ_HOST"),
        ({"rabbit_mq_queue_type": "quorum"}, "RABBIT_MQ_QUEUE_TYPE=quorum needs RABBIT_MQ_HOST"),
        ({"rabbit_mq_host": "r", "rabbit_mq_queue_type": "stream"}, "'classic' or 'quorum'"),
    ],
)
def test_a_cluster_setting_that_cannot_work_stops_the_start(settings: dict[str, str], says: str) -> None:
    with pytest.raises(ValidationError) as raised:
        Config(_env_file=None, **settings)  # type: ignore[arg-type]
    assert says in str(raised.value)


@pytest.mark.parametrize(
    ("settings", "url"),
    [
        ({}, "sqlite:///data/control.db"),  # make run's data folder: nothing new to set up
        ({"file_store_url": "/data"}, "sqlite:////data/control.db"),  # compose's volume
        ({"file_store_url": "s3://bucket/files"}, "sqlite:///data/control.db"),
        ({"control_database_url": "postgresql://gw:pw@db/control"}, "postgresql://gw:pw@db/control"),
    ],
)
def test_the_control_planes_database_is_a_sqlite_file_beside_the_files_unless_named(
    settings: dict[str, str], url: str
) -> None:
    config = Config(_env_file=None, **settings)  # type: ignore[arg-type]
    assert config.control_database == url
    assert "pw@" not in repr(config)


def test_admin_api_keys_are_a_secret() -> None:
    config = Config(_env_file=None, admin_api_keys="sk-admin-secret")  # type: ignore[call-arg]
    assert "sk-admin-secret" not in repr(config)
