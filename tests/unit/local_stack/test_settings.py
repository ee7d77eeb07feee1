"""The local stack's own settings: read from the environment and the same `.env` as Config."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from local_stack.settings import LocalStack

pytestmark = pytest.mark.unit


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ["ENV_FILE", *(field.upper() for field in LocalStack.model_fields)]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("API_PORT=9000\nMODEL_SERVERS=2\nINNER_LLM_URL=gpu:8000\n")
    return tmp_path


def test_the_env_file_is_read_under_the_environment(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_SERVERS", "3")
    local = LocalStack.read_from_env()
    assert (local.api_port, local.model_servers) == (9000, 3)  # Config's variables in it are left to Config


def test_env_file_names_another_file_or_none(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (folder / "other.env").write_text("FLOWER_PORT=6000\n")
    monkeypatch.setenv("ENV_FILE", str(folder / "other.env"))
    assert (LocalStack.read_from_env().flower_port, LocalStack.read_from_env().api_port) == (6000, 8000)
    monkeypatch.setenv("ENV_FILE", "")
    assert LocalStack.read_from_env().api_port == 8000


@pytest.mark.parametrize("settings", [{"model_servers": 9}, {"model_parallel": 0}, {"model_context": 128}])
def test_an_embedded_server_that_could_not_work_is_refused(settings: dict[str, int]) -> None:
    with pytest.raises(ValidationError):
        LocalStack(_env_file=None, **settings)  # type: ignore[arg-type]
