"""LiteLLM's proxy as a path of the benchmark ("litellm"), the same fake model server behind it.

LiteLLM is not a dependency of this project. Its proxy is installed on demand, at the
version `bench/litellm-requirements.txt` pins, into a virtualenv of its own: by default
`~/.cache/llm-api-bench/litellm-<version>-<hash of the pins>` (under `$XDG_CACHE_HOME`
when set; `BENCH_LITELLM_VENV` names another folder). It lives outside the tree so that
every worktree, and the temporary one `bench.compare` makes of the base, share one
install of a few minutes. When it cannot be installed or started, the path is skipped
with a message.

The proxy runs as LiteLLM's production guide has it, for speed: one uvicorn worker, no
database, no callbacks, logging at ERROR, its model cost map read from the package,
telemetry off; and no master key, as the gateway's paths have no API keys (neither
checks a key). One `model_list` entry sends the model to the fake server as an
OpenAI-compatible `openai/<model>`.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from testing.fake_model_server import free_port
from testing.processes import Processes, wait_for_http

REQUIREMENTS = Path(__file__).with_name("litellm-requirements.txt")
INSTALL_SECONDS = 900  # per step: making the virtualenv, then pip
START_SECONDS = 180  # the proxy imports a great deal before it listens


def requirements(text: str) -> list[str]:
    """The requirement lines of a requirements file's text, without comments and blanks."""
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line]


def venv_dir(text: str, environ: Mapping[str, str]) -> Path:
    """Where the virtualenv of the requirements `text` lives: `BENCH_LITELLM_VENV`, or a
    folder of its own per pinned content under the user's cache (a new pin, a new folder)."""
    if environ.get("BENCH_LITELLM_VENV"):
        return Path(environ["BENCH_LITELLM_VENV"])
    cache = Path(environ["XDG_CACHE_HOME"]) if environ.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    pins = requirements(text)
    version = next((pin.split("==", 1)[1] for pin in pins if pin.startswith("litellm") and "==" in pin), "unpinned")
    digest = hashlib.sha256("\n".join(pins).encode()).hexdigest()[:8]
    return cache / "llm-api-bench" / f"litellm-{version}-{digest}"


def install(venv: Path, log: Path, requirements_file: Path = REQUIREMENTS, python: str = sys.executable) -> Path | None:
    """The proxy's `litellm` command in `venv`, installed there first (the virtualenv made
    with `python`) unless it already is at these requirements; None, with the reason
    printed, when it cannot be."""
    text = requirements_file.read_text()
    command = venv / "bin" / "litellm"
    done = venv / "bench-installed.txt"  # written last: a virtualenv half made is made again
    try:
        venv.parent.mkdir(parents=True, exist_ok=True)
        lock = (venv.parent / f"{venv.name}.lock").open("w")
    except OSError as error:
        print(f"bench: litellm: skipped, cannot make its virtualenv at {venv} ({error})", flush=True)
        return None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second run waits for the first one's install
        if done.exists() and done.read_text() == text and command.exists():
            return command
        pins = ", ".join(requirements(text))
        print(f"bench: litellm: installing {pins} into {venv} (once; a few minutes)", flush=True)
        shutil.rmtree(venv, ignore_errors=True)
        steps = [
            [python, "-m", "venv", str(venv)],
            [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "-r", str(requirements_file)],
        ]
        with log.open("ab") as out:
            for step in steps:
                try:
                    subprocess.run(step, stdout=out, stderr=subprocess.STDOUT, check=True, timeout=INSTALL_SECONDS)
                except (OSError, subprocess.SubprocessError) as error:
                    print(f"bench: litellm: skipped, installing {pins} failed ({error}); see {log}", flush=True)
                    return None
        if not command.exists():
            print(f"bench: litellm: skipped, {pins} installed no `litellm` command; see {log}", flush=True)
            return None
        done.write_text(text)
        return command


def proxy_config(model_url: str, model: str) -> dict[str, Any]:
    """LiteLLM's config.yaml: `model` sent to the OpenAI-compatible server at `model_url`,
    as an operator would set the proxy up for speed."""
    return {
        "model_list": [
            {
                "model_name": model,
                "litellm_params": {"model": f"openai/{model}", "api_base": f"{model_url}/v1", "api_key": "none"},
            }
        ],
        # No callbacks are configured (none by default), nor cache, retries or fallbacks.
        "litellm_settings": {"telemetry": False, "set_verbose": False, "request_timeout": 600},
        "router_settings": {"routing_strategy": "simple-shuffle"},  # the guide's advice for throughput
        # No database_url, and no master_key: no key checked, as on the gateway's paths (which
        # have no API keys), and no spend logged. Since 1.108 the proxy refuses to start
        # without a master key unless told that this is meant.
        "general_settings": {
            "dangerously_permit_weak_or_unset_master_key": True,
            "disable_spend_logs": True,
            "disable_error_logs": True,
        },
    }


def proxy_env() -> dict[str, str]:
    """The proxy's whole environment: no variable of this shell (a DATABASE_URL, an
    OPENAI_API_KEY, a proxy) reaches it, and no `.env` is read (production mode)."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(Path.home()),
        "LITELLM_MODE": "PRODUCTION",
        "LITELLM_LOG": "ERROR",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "NO_DOCS": "True",
        "NO_REDOC": "True",
        "DISABLE_ADMIN_UI": "True",
    }


class Proxy:
    """LiteLLM's proxy (one process, one worker) on a free port, `model` behind it."""

    def __init__(self, processes: Processes, command: Path, model_url: str, model: str) -> None:
        self._folder = Path(tempfile.mkdtemp(prefix="bench-litellm-"))
        config = self._folder / "config.yaml"
        config.write_text(yaml.safe_dump(proxy_config(model_url, model), sort_keys=False))
        port = free_port()
        args = [str(command), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
        args += ["--num_workers", "1"]
        self.process = processes.spawn("litellm", args, proxy_env(), cwd=self._folder, env_only=True)
        self.url = f"http://127.0.0.1:{port}"
        try:
            wait_for_http(self.process, f"{self.url}/health/readiness", timeout=START_SECONDS)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        self.process.stop()
        shutil.rmtree(self._folder, ignore_errors=True)


def start(processes: Processes, model_url: str, model: str) -> Proxy | None:
    """LiteLLM's proxy, installed first if need be; None, with the reason printed, when it
    cannot be installed or does not start."""
    venv = venv_dir(REQUIREMENTS.read_text(), os.environ)
    command = install(venv, processes.log_dir / "litellm-install.log")
    if command is None:
        return None
    try:
        return Proxy(processes, command, model_url, model)
    except RuntimeError as error:
        print(f"bench: litellm: skipped, its proxy did not start: {error}", flush=True)
        return None
