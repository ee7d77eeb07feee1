"""`make run` on a copy of the repository with no .env: a real answer, Flower, and a clean Ctrl-C."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from testing.fake_model_server import free_port
from testing.processes import ROOT

pytestmark = pytest.mark.slow

CONFIGURED = ("RABBIT_MQ_", "REDIS_", "INNER_LLM_", "QUEUE_NAME", "ENV_FILE", "MODEL_", "API_", "FLOWER_")


def copy_repository(target: Path) -> None:
    """The tracked files (mtimes kept, so make sees the virtualenv as up to date), plus the
    virtualenv and model cache by link, so the test does not install or download again."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        if (ROOT / name).exists():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    (target / ".venv").symlink_to(ROOT / ".venv")
    (ROOT / ".cache" / "models").mkdir(parents=True, exist_ok=True)
    (target / ".cache").mkdir()
    (target / ".cache" / "models").symlink_to(ROOT / ".cache" / "models")


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_make_run_starts_everything_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    copy_repository(tmp_path)
    ports = {
        name: str(free_port()) for name in ("API_PORT", "FLOWER_PORT", "EMBEDDED_REDIS_PORT", "EMBEDDED_MODEL_PORT")
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith(CONFIGURED)} | ports
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        run = subprocess.Popen(
            ["make", "run"], cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 300
        while "llm-api is up" not in log.read_text(errors="replace"):
            assert run.poll() is None, log.read_text()[-4000:]
            assert time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(0.5)
        output = log.read_text()
        assert f"http://127.0.0.1:{ports['API_PORT']}/docs" in output
        assert f"http://127.0.0.1:{ports['API_PORT']}/console" in output
        assert f"http://127.0.0.1:{ports['FLOWER_PORT']}" in output

        api = f"http://127.0.0.1:{ports['API_PORT']}"
        answer = httpx.post(
            f"{api}/generate", json={"content": "What is AI?", "meta": {"tokens_limit": 32}}, timeout=120
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["content"].strip()
        assert httpx.get(f"http://127.0.0.1:{ports['FLOWER_PORT']}/", timeout=10).status_code == 200

        started = descendants(run.pid)
        assert len(started) >= 6  # honcho, valkey, model, api, worker, flower, ready
        os.killpg(run.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        run.wait(60)
        deadline = time.monotonic() + 30
        while any(alive(pid) for pid in started) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [pid for pid in started if alive(pid)] == [], log.read_text()[-3000:]
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
