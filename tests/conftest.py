"""Fixtures that start real things: the fake model server, workers, the API.

RabbitMQ and Redis are this machine's own; each stack gets its own queue and
Redis key prefix, so test runs never see each other, and both are deleted after.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from kombu import Connection

from settings import Config
from tests.fake_model_server import FakeModelServer, free_port
from tests.processes import Processes

RABBIT = ("127.0.0.1", 5672)
REDIS = ("127.0.0.1", 6379)


def _reachable(address: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(address, timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def services() -> None:
    """RabbitMQ and Redis of this machine (started by .ci/run when down)."""
    missing = [name for name, address in (("RabbitMQ", RABBIT), ("Redis", REDIS)) if not _reachable(address)]
    if missing:
        pytest.fail(f"{' and '.join(missing)} not running on 127.0.0.1 (start them, or run .ci/run)")


@pytest.fixture(scope="session")
def fake_server() -> Iterator[FakeModelServer]:
    server = FakeModelServer().start()
    yield server
    server.stop()


@pytest.fixture
def fake(fake_server: FakeModelServer) -> Iterator[FakeModelServer]:
    """The fake model server, with what it received forgotten before and after the test."""
    fake_server.reset()
    yield fake_server
    fake_server.reset()


def stack_env(fake_url: str, **overrides: str) -> dict[str, str]:
    """Environment of a gateway on this machine's RabbitMQ and Redis, with its own queue and prefix."""
    run = uuid.uuid4().hex[:10]
    env = {
        "ENV_FILE": "",
        "RABBIT_MQ_HOST": RABBIT[0],
        "RABBIT_MQ_PORT": str(RABBIT[1]),
        "RABBIT_MQ_LOGIN": "guest",
        "RABBIT_MQ_PASSWORD": "guest",
        "QUEUE_NAME": f"test-queue-{run}",
        "REDIS_HOST": REDIS[0],
        "REDIS_PORT": str(REDIS[1]),
        "REDIS_PREFIX": f"test-{run}",
        "INNER_LLM_URL": fake_url,
        "LLM_MAX_RETRIES": "2",
        "LLM_RETRY_BACKOFF": "0.05",
        "WAIT_TIMEOUT": "60",
    }
    env.update(overrides)
    return env


@dataclass
class Stack:
    """A running gateway: its environment, API address and processes."""

    env: dict[str, str]
    url: str
    processes: Processes

    @property
    def config(self) -> Config:
        return Config(_env_file=None, **{k.lower(): v for k, v in self.env.items() if k != "ENV_FILE"})  # type: ignore[call-arg]


def _remove_traces(config: Config) -> None:
    """Delete the stack's queue and Redis keys."""
    if config.uses_rabbitmq:
        try:
            with Connection(config.broker_url, connect_timeout=2) as connection:
                connection.default_channel.queue_delete(config.queue_name)
        except Exception:  # noqa: BLE001 - a broker a test made unreachable has nothing to clean
            pass
    try:
        client = redis.Redis(host=REDIS[0], port=REDIS[1], socket_connect_timeout=2)
        keys = list(client.scan_iter(match=f"{config.redis_prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    except redis.RedisError:
        pass


StackFactory = Callable[..., Stack]


def _stack_factory(tmp: Path, fake: FakeModelServer) -> tuple[StackFactory, Callable[[], None]]:
    made: list[Stack] = []

    def make(workers: int = 1, api: bool = True, concurrency: int | None = None, **overrides: str) -> Stack:
        env = stack_env(fake.url, **overrides)
        processes = Processes(tmp)
        stack = Stack(env, "", processes)
        made.append(stack)
        for index in range(workers):
            processes.worker(env, name=f"worker{index}", concurrency=concurrency)
        if api:
            port = free_port()
            processes.api(env, port)
            stack.url = f"http://127.0.0.1:{port}"
        return stack

    def cleanup() -> None:
        for stack in made:
            stack.processes.stop_all()
            _remove_traces(stack.config)

    return make, cleanup


@pytest.fixture
def make_stack(services: None, fake_server: FakeModelServer, tmp_path: Path) -> Iterator[StackFactory]:
    """Start a gateway of its own for one test: ``make_stack(workers=0, WAIT_TIMEOUT="1")``."""
    make, cleanup = _stack_factory(tmp_path, fake_server)
    yield make
    cleanup()


@pytest.fixture(scope="session")
def shared_stack(
    services: None, fake_server: FakeModelServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    make, cleanup = _stack_factory(tmp_path_factory.mktemp("stack"), fake_server)
    yield make()
    cleanup()


@pytest.fixture
def stack(shared_stack: Stack, fake: FakeModelServer) -> Stack:
    """The gateway most tests share: one worker, one API, the fake model server behind."""
    return shared_stack
