"""Starting and stopping the gateway's real processes (worker, API, Flower) for tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis
from kombu import Connection

from api.tenancy.fair_share import tenant_queue
from local_stack.valkey import command as valkey_command
from shared.broker.queues import bands
from shared.config import Config
from shared.control.database import engine_for
from shared.control.store import ControlStore
from shared.registry import load_registry
from shared.storage import redis_clients
from shared.tenants import load_tenants
from testing.fake_model_server import free_port

ROOT = Path(__file__).resolve().parent.parent
# This machine's RabbitMQ and Redis, where they run.
RABBIT = ("127.0.0.1", 5672)
REDIS = ("127.0.0.1", 6379)


def reachable(address: tuple[str, int]) -> bool:
    """Whether something accepts TCP connections at `address` now."""
    try:
        with socket.create_connection(address, timeout=1):
            return True
    except OSError:
        return False


VENV_BIN = Path(sys.executable).parent


@dataclass
class Process:
    """A child process whose output goes to a log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(5)


@dataclass
class Processes:
    """Every process a test started, stopped together at the end."""

    log_dir: Path
    started: list[Process] = field(default_factory=list)

    def spawn(
        self,
        name: str,
        args: list[str],
        env: dict[str, str],
        cwd: Path = ROOT,
        env_only: bool = False,
        group: int | None = None,
    ) -> Process:
        """Start `args` in `cwd` with the test's environment and `env` (`env` alone with
        `env_only`); in the group `group` alone when given (root only)."""
        log = self.log_dir / f"{name}-{len(self.started)}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                args,
                cwd=cwd,
                env={**({} if env_only else os.environ), **env, "PYTHONUNBUFFERED": "1"},
                stdout=out,
                stderr=subprocess.STDOUT,
                **({"group": group, "extra_groups": []} if group is not None else {}),
            )
        process = Process(name, popen, log)
        self.started.append(process)
        return process

    def worker(
        self,
        env: dict[str, str],
        name: str = "worker",
        concurrency: int | None = None,
        group: int | None = None,
        wait: bool = True,
    ) -> Process:
        """A worker as compose starts one (without mingle), named `name`; returned once it
        is ready, or at once without `wait` (then `ready(process)` waits)."""
        args = [
            str(VENV_BIN / "celery"),
            "-A",
            "tasks.app",
            "worker",
            "-l",
            "info",
            "--without-mingle",
            "-n",
            f"{name}-{time.monotonic_ns()}@%h",
        ]
        if concurrency:
            args += ["-c", str(concurrency)]
        process = self.spawn(name, args, env, group=group)
        if wait:
            wait_for_output(process, WORKER_READY)
        return process

    def api(self, env: dict[str, str], port: int, wait: bool = True) -> Process:
        args = [
            str(VENV_BIN / "uvicorn"),
            "--factory",
            "api.main:create_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--timeout-graceful-shutdown",
            "10",
        ]
        process = self.spawn("api", args, env)
        if wait:
            wait_for_http(process, f"http://127.0.0.1:{port}/health")
        return process

    def stop_all(self, timeout: float = 15) -> None:
        """Stop every process: all asked at once (SIGTERM), then each awaited (killed
        past `timeout`)."""
        running = [process for process in reversed(self.started) if process.popen.poll() is None]
        for process in running:
            process.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in running:
            try:
                process.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()


WORKER_READY = " ready."


def wait_for_output(process: Process, text: str, timeout: float = 30) -> None:
    """Wait until `text` appears in the process's output."""
    deadline = time.monotonic() + timeout
    while text not in process.output():
        if process.popen.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{process.name} did not print {text!r}:\n{process.output()[-3000:]}")
        time.sleep(0.05)


def wait_for_http(process: Process, url: str, timeout: float = 30) -> None:
    """Wait until `url` answers 200."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process.popen.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{process.name} did not answer {url}:\n{process.output()[-3000:]}")
        time.sleep(0.05)


def stack_queues(config: Config) -> list[str]:
    """Every queue a stack of `config` may declare: each model's (with quorum queues,
    each priority band), each tenant's queue of each model (fair sharing), the dead
    letters' and the webhooks'."""
    models = [config.queue_name]
    tenants: list[str] = []
    try:
        models = load_registry(config).queues
        keys = config.api_keys.get_secret_value() if config.api_keys else ""
        tenants = list(load_tenants(keys, config.api_keys_file).named)
    except Exception:  # noqa: BLE001 - a test of a bad registry or keys file: its queue alone
        pass
    tenants += runtime_projects(config)
    named = [*models, *(tenant_queue(queue, tenant) for queue in models for tenant in tenants)]
    return [*(band for name in named for band in bands(config, name)), config.dead_letter_queue, config.webhook_queue]


def runtime_projects(config: Config) -> list[str]:
    """The ids of the projects made at runtime in the stack's control plane (each a tenant
    with queues of its own: api/tenancy/fair_share.py), archived ones too."""
    url = config.control_database
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return []  # no API ever started: nothing made, and no file to make now
    engine = engine_for(url, connect_timeout=2)
    try:
        return list(ControlStore(engine).directory(config.tenant_max_priority).projects)
    except Exception:  # noqa: BLE001 - never migrated, or a test's database already dropped
        return []
    finally:
        engine.dispose()


def remove_traces(config: Config) -> None:
    """Delete the stack's queues and Redis keys (left behind, quorum queues hold RabbitMQ's
    file handles: a few hundred of them and it accepts no more connections)."""
    if config.uses_rabbitmq:
        try:
            with Connection(config.broker_url, connect_timeout=2) as connection:
                channel = connection.default_channel
                for name in stack_queues(config):
                    channel.queue_delete(name)
                    channel.exchange_delete(name)
        except Exception:  # noqa: BLE001 - a broker a test made unreachable has nothing to clean
            pass
    try:
        client = redis_clients.sync_client(config, socket_connect_timeout=2)
        keys = list(client.scan_iter(match=f"{config.redis_prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    except redis.RedisError:
        pass


def config_from_env(env: dict[str, str]) -> Config:
    """The Config a process started with `env` reads (no .env file)."""
    values = {k.lower(): v for k, v in env.items() if k.lower() in Config.model_fields}
    return Config(_env_file=None, **values)  # type: ignore[call-arg]


class RedisServer:
    """A Redis-compatible server on a fixed port that keeps its data on disk (append-only
    file), so it can be stopped and started again as a deployment's would be; or, with
    `persist=False`, one that comes back empty (as this machine's own Redis would)."""

    def __init__(
        self, binary: str, data_dir: Path, port: int | None = None, password: str | None = None, persist: bool = True
    ) -> None:
        self.binary = binary
        self.persist = persist
        self.data_dir = data_dir
        self.port = port or free_port()
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.data_dir)]
        args += ["--save", "", "--appendonly", "yes" if self.persist else "no", "--appendfsync", "always"]
        if self.password:
            args += ["--requirepass", self.password]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        client = redis.Redis(host="127.0.0.1", port=self.port, password=self.password)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    self.process.kill()
                    raise RuntimeError(f"{self.binary} did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        """Shut down as on SIGTERM: the data is written, clients see the connection close."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def start_valkey(data_dir: Path) -> tuple[subprocess.Popen[bytes], tuple[str, int]]:
    """The embedded Valkey of the run command on a free port, once it answers."""
    port = free_port()
    process = subprocess.Popen(valkey_command(port, data_dir), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return process, ("127.0.0.1", port)
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("embedded Valkey did not start") from None
            time.sleep(0.05)
