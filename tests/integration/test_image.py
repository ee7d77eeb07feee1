"""The Docker image as it will be built, without a Docker engine.

The Dockerfile is replayed into a folder of its own outside the checkout: its COPY
lines copy what the build context holds (less `.dockerignore`), its RUN lines run
`pip` in a fresh virtualenv standing in for the image's Python, and WORKDIR sets where
the processes start. Then the API, a worker and Flower are started from that folder
with docker-compose.yml's commands and environment, against this machine's RabbitMQ
and Redis, and answer one job. Nothing of the checkout is importable there: what
runs is what the image would hold.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from testing.control_databases import POSTGRES, ControlDatabases
from testing.fake_model_server import FakeModelServer, free_port
from testing.processes import (
    RABBIT,
    ROOT,
    Processes,
    config_from_env,
    reachable,
    remove_traces,
    wait_for_http,
    wait_for_output,
)

# One xdist worker for the module: the image is built once (a module fixture), not once per worker.
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("image")]


@dataclass
class Image:
    """What replaying the Dockerfile left: its file system root, Python and working folder."""

    root: Path
    bin: Path
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", text)
    instructions = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            instructions.append((word.upper(), rest.strip()))
    return instructions


def ignored(relative: str, patterns: list[str]) -> bool:
    """Whether `.dockerignore` keeps `relative` (a path in the build context) out."""
    parts = relative.split("/")
    for pattern in patterns:
        pattern = pattern.removeprefix("**/")
        for depth in range(1, len(parts) + 1):
            if fnmatch.fnmatch("/".join(parts[:depth]), pattern) or fnmatch.fnmatch(parts[depth - 1], pattern):
                return True
    return False


def copy_context(source: str, destination: Path, patterns: list[str]) -> None:
    """COPY `source` (of the build context) to `destination`, as Docker does."""
    origin = ROOT / source
    if origin.is_file():
        target = destination / origin.name if str(destination).endswith("/") or destination.is_dir() else destination
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(origin, target)
        return
    for path in origin.rglob("*"):
        relative = path.relative_to(ROOT).as_posix()
        if path.is_dir() or ignored(relative, patterns):
            continue
        target = destination / path.relative_to(origin)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)


def replay_dockerfile(root: Path) -> Image:
    """Build the image's files under `root` by replaying the Dockerfile."""
    patterns = [
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip() and line[0] != "#"
    ]
    venv = root / "python"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    image = Image(root=root, bin=venv / "bin", workdir=root)

    def inside(path: str) -> Path:
        return root / path.lstrip("/") if path.startswith("/") else image.workdir / path

    for instruction, arguments in dockerfile_instructions((ROOT / "Dockerfile").read_text()):
        if instruction == "WORKDIR":
            image.workdir = inside(arguments)
            image.workdir.mkdir(parents=True, exist_ok=True)
        elif instruction == "ENV":
            image.env.update(dict(pair.split("=", 1) for pair in shlex.split(arguments)))
        elif instruction == "COPY":
            *sources, destination = shlex.split(arguments)
            target = inside(destination)
            if len(sources) > 1 or destination.endswith("/"):
                target.mkdir(parents=True, exist_ok=True)
            for source in sources:
                copy_context(source, target, patterns)
        elif instruction == "RUN":
            for command in arguments.split("&&"):
                run_in_image(image, shlex.split(command), inside)
        elif instruction in ("FROM", "EXPOSE", "USER", "CMD", "LABEL", "ARG"):
            continue
        else:
            raise AssertionError(
                f"the Dockerfile's {instruction} is not replayed here: teach tests/integration/test_image.py"
            )
    return image


def run_in_image(image: Image, words: list[str], inside: Any) -> None:
    """One command of a RUN line, in the image's Python and folders."""
    program, *arguments = words
    if program in ("useradd", "chown"):
        return  # the image's own user, and what it owns: nothing to install
    if program == "mkdir":
        for word in arguments:
            if not word.startswith("-"):
                inside(word).mkdir(parents=True, exist_ok=True)
        return
    mapped = [str(inside(word)) if word.startswith("/") else word for word in arguments]
    if program == "rm":
        for path in (word for word in mapped if not word.startswith("-")):
            shutil.rmtree(path, ignore_errors=True)
        return
    assert program == "pip", f"the Dockerfile runs {program!r}, which tests/integration/test_image.py does not replay"
    env = {**os.environ, **image.env, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)
    subprocess.run([str(image.bin / "python"), "-m", "pip", *mapped], cwd=image.workdir, env=env, check=True)


def compose_environment(service: dict[str, Any], values: dict[str, str]) -> dict[str, str]:
    """A service's environment from docker-compose.yml, `${VAR:-default}` filled from `values`."""

    def fill(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(3) or ""
        return values.get(name, default if match.group(2) in (":-", "-") else "")

    env = {}
    for name, value in service.get("environment", {}).items():
        env[name] = re.sub(r"\$\{([A-Z0-9_]+)(:-|-|:\?|\?)?([^}]*)\}", fill, str(value))
    return env


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    # Outside the checkout, so that nothing of it can be imported by accident.
    root = tmp_path_factory.mktemp("image")
    assert ROOT not in root.parents
    return replay_dockerfile(root)


@pytest.fixture
def started(
    image: Image, fake: FakeModelServer, redis_address: tuple[str, int], tmp_path: Path
) -> Iterator[dict[str, Any]]:
    if not reachable(RABBIT):
        pytest.skip("RabbitMQ is not running on 127.0.0.1:5672")
    if not reachable(POSTGRES):
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432 (compose's control plane database)")
    databases = ControlDatabases("postgresql", tmp_path)
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    run = uuid.uuid4().hex[:10]
    values = {
        "RABBIT_MQ_LOGIN": "guest",
        "RABBIT_MQ_PASSWORD": "guest",
        "QUEUE_NAME": f"test-image-{run}",
        "REDIS_PREFIX": f"test-image-{run}",
        "COMPOSE_INNER_LLM_URL": fake.url,
        "FLOWER_BASIC_AUTH": "admin:image-test",
        "LOG_FORMAT": "json",
        # The compose file's volume at /data: the image's own folder of that name.
        "FILE_STORE_URL": str(image.root / "data"),
    }
    # The compose network's host names are this machine's services.
    hosts = {"RABBIT_MQ_HOST": RABBIT[0], "REDIS_HOST": redis_address[0], "REDIS_PORT": str(redis_address[1])}
    # Compose's postgres service: this machine's PostgreSQL, in a schema of the test's own.
    hosts["CONTROL_DATABASE_URL"] = databases.fresh()
    processes = Processes(image.root)
    ports = {"api": free_port(), "flower": free_port()}
    started = {"ports": ports, "processes": processes, "data": image.root / "data"}
    for name in ("worker", "api", "flower"):
        service = compose["services"][name]
        command = [str(part) for part in service["command"]]
        # The published ports are the test's free ones.
        command = [
            re.sub(r"^(--port=)?(8000|5555)$", lambda m, n=name: f"{m.group(1) or ''}{ports[n]}", part)
            for part in command
        ]
        env = {
            "PATH": f"{image.bin}:/usr/bin:/bin",
            "HOME": str(image.root),
            **image.env,
            **compose_environment(service, values),
            **hosts,
        }
        # Not the test's environment: no PYTHONPATH, no virtualenv of the checkout.
        started[name] = processes.spawn(name, [str(image.bin / command[0]), *command[1:]], env, image.workdir, True)
    yield started
    processes.stop_all()
    databases.drop()
    remove_traces(config_from_env({**values, **hosts, "RABBIT_MQ_PORT": "5672"}))


def test_the_image_holds_every_module_its_processes_import(image: Image) -> None:
    assert not (image.root / "src").exists(), "the build context is removed after installing it"
    assert (image.root / "data").is_dir(), "the file store's folder (compose mounts its volume there)"
    # The processes start in WORKDIR, which holds no source: imports come from the package.
    assert not list(image.workdir.glob("*.py"))
    probe = "import api.main, tasks.app, tasks.llm, celeryconfig, shared; print(tasks.app.__file__)"
    out = subprocess.run(
        [str(image.bin / "python"), "-c", probe], cwd=image.workdir, env={"PATH": "/usr/bin:/bin"},
        capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "site-packages" in out.stdout


def test_the_image_answers_a_job_with_the_compose_commands(started: dict[str, Any], fake: FakeModelServer) -> None:
    ports = started["ports"]
    api, worker, flower = started["api"], started["worker"], started["flower"]
    wait_for_output(worker, " ready.", timeout=60)
    wait_for_http(api, f"http://127.0.0.1:{ports['api']}/health", timeout=60)
    # The interactive docs' scripts are in the image (fastapi-offline's), not on a CDN.
    script = httpx.get(f"http://127.0.0.1:{ports['api']}/docs-assets/swagger-ui-bundle.js", timeout=10)
    assert script.status_code == 200 and len(script.content) > 100_000
    # So are the console's page and script (the package's api/console/static/).
    for asset in ("/console", "/console/static/console.js", "/console/static/console.css"):
        served = httpx.get(f"http://127.0.0.1:{ports['api']}{asset}", timeout=10)
        assert served.status_code == 200 and len(served.content) > 1000, asset
    answer = httpx.post(
        f"http://127.0.0.1:{ports['api']}/generate", json={"job_id": f"image-{uuid.uuid4().hex}", "content": "built"},
        timeout=60,
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    assert answer.json()["content"] == "echo: built"
    assert fake.completions[-1]["messages"] == [{"role": "user", "content": "built"}]

    # A batch, through the image's API and worker and the file store the volume holds.
    api_url = f"http://127.0.0.1:{ports['api']}/v1"
    line = {"custom_id": "img", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "fake-model", "messages": [{"role": "user", "content": "in a batch"}]}}  # fmt: skip
    uploaded = httpx.post(f"{api_url}/files", files={"file": ("b.jsonl", json.dumps(line).encode())},
                          data={"purpose": "batch"}, timeout=30).json()  # fmt: skip
    batch = httpx.post(f"{api_url}/batches", json={"input_file_id": uploaded["id"], "completion_window": "24h",
                                                   "endpoint": "/v1/chat/completions"}, timeout=30).json()  # fmt: skip
    deadline = time.monotonic() + 60
    while batch["status"] not in ("completed", "failed", "expired", "cancelled"):
        assert time.monotonic() < deadline, batch
        time.sleep(0.3)
        batch = httpx.get(f"{api_url}/batches/{batch['id']}", timeout=10).json()
    assert batch["status"] == "completed" and batch["request_counts"]["completed"] == 1
    assert list((started["data"] / "batches" / batch["id"] / "lines").iterdir())

    flower_url = f"http://127.0.0.1:{ports['flower']}"
    wait_for_http(flower, f"{flower_url}/healthcheck", timeout=60)
    auth = ("admin", "image-test")
    deadline = time.monotonic() + 30
    # refresh=1: Flower asks the workers again (it asked once as it started, maybe before the worker).
    while not httpx.get(f"{flower_url}/api/workers?refresh=1", auth=auth, timeout=10).json():
        assert time.monotonic() < deadline, f"Flower never saw the worker:\n{flower.output()[-2000:]}"
        time.sleep(0.5)
