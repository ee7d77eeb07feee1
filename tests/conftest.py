"""Fixtures that start real things: the fake model server, brokers, workers, the API.

RabbitMQ and Redis are this machine's own where they run; the embedded Valkey
(the run command's default broker and result store) is started for the tests.
Integration tests run once per broker. Each stack gets its own queue and Redis
key prefix, so test runs never see each other, and both are deleted after.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared.config import Config
from testing.control_databases import POSTGRES, ControlDatabases
from testing.fake_model_server import FakeModelServer, free_port
from testing.processes import (
    RABBIT,
    REDIS,
    WORKER_READY,
    Processes,
    config_from_env,
    reachable,
    remove_traces,
    start_valkey,
    wait_for_http,
    wait_for_output,
)

BROKERS = ["rabbitmq", "valkey"]
CONTROL_DATABASES = ["sqlite", "postgresql"]
LOG_LINES = 60  # of each process a failed test started, shown with its failure


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> pytest.TestReport:
    """A failed test shows the end of each log its processes wrote (API, workers, model
    servers): a failure in CI is read from what the processes said, not guessed."""
    report: pytest.TestReport = yield
    folder = getattr(item, "funcargs", {}).get("tmp_path")
    if report.failed and call.when == "call" and isinstance(folder, Path):
        for log in sorted(folder.rglob("*.log"))[:12]:
            lines = _collapsed(log.read_text(errors="replace").splitlines())[-LOG_LINES:]
            report.sections.append((f"Captured {log.relative_to(folder)}", "\n".join(lines)))
    return report


def _collapsed(lines: list[str]) -> list[str]:
    """A log's lines, a message repeated many times in a row (a probe's) as its first and a count."""
    out: list[str] = []
    last, repeats = None, 0
    for line in lines:
        message = line.split('"message": ', 1)[-1][:120]
        if message == last:
            repeats += 1
            continue
        if repeats:
            out.append(f"    ... and {repeats} more like it")
        out.append(line)
        last, repeats = message, 0
    if repeats:
        out.append(f"    ... and {repeats} more like it")
    return out


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def valkey_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """The embedded Valkey server of the run command, on a free port."""
    process, address = start_valkey(tmp_path_factory.mktemp("valkey"))
    yield address
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="session")
def redis_address(request: pytest.FixtureRequest) -> tuple[str, int]:
    """This machine's Redis where it runs, else the embedded Valkey."""
    if reachable(REDIS):
        return REDIS
    return request.getfixturevalue("valkey_address")


@pytest.fixture(scope="session", params=BROKERS)
def broker_env(request: pytest.FixtureRequest, redis_address: tuple[str, int]) -> dict[str, str]:
    """The environment that selects one broker: RabbitMQ (+ Redis), or the embedded Valkey for both."""
    if request.param == "rabbitmq":
        if not reachable(RABBIT):
            if os.environ.get("REQUIRE_RABBITMQ"):
                pytest.fail("RabbitMQ is not running on 127.0.0.1:5672 (REQUIRE_RABBITMQ is set)")
            pytest.skip("RabbitMQ is not running on 127.0.0.1:5672")
        return {
            "RABBIT_MQ_HOST": RABBIT[0],
            "RABBIT_MQ_PORT": str(RABBIT[1]),
            "RABBIT_MQ_LOGIN": "guest",
            "RABBIT_MQ_PASSWORD": "guest",
            "REDIS_HOST": redis_address[0],
            "REDIS_PORT": str(redis_address[1]),
        }
    valkey = request.getfixturevalue("valkey_address")
    return {"RABBIT_MQ_HOST": "", "REDIS_HOST": valkey[0], "REDIS_PORT": str(valkey[1])}


@pytest.fixture(scope="module", params=CONTROL_DATABASES)
def control_databases(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlDatabases]:
    """Empty databases for the control plane, of each kind in turn (``.fresh()`` gives one's
    URL): SQLite files, and schemas of this machine's PostgreSQL, dropped after the module."""
    if request.param == "postgresql" and not reachable(POSTGRES):
        message = "PostgreSQL is not running on 127.0.0.1:5432 (trust auth, database test; .ci/run starts it)"
        if os.environ.get("REQUIRE_POSTGRES"):
            pytest.fail(f"{message}, and REQUIRE_POSTGRES is set")
        pytest.skip(message)
    databases = ControlDatabases(request.param, tmp_path_factory.mktemp("control"))
    yield databases
    databases.drop()


@pytest.fixture(scope="session")
def fake_server() -> Iterator[FakeModelServer]:
    server = FakeModelServer().start()
    yield server
    server.stop()


@pytest.fixture
def servers() -> Iterator[Callable[..., FakeModelServer]]:
    """Fake model servers of the test's own, started as asked: ``servers(latency=0.1, slots=4)``."""
    started: list[FakeModelServer] = []

    def start(latency: float = 0.0, slots: int | None = None, port: int = 0) -> FakeModelServer:
        server = FakeModelServer(port).start()
        server.latency, server.slots = latency, slots
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def stack_once(stack: Stack, broker_env: dict[str, str]) -> Stack:
    """The shared gateway, for what the broker does not decide (a body's format, its
    translation both ways): on RabbitMQ alone, once being enough."""
    if not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("once is enough: a body's format and translation are the same on either broker")
    return stack


@pytest.fixture
def fake(fake_server: FakeModelServer) -> Iterator[FakeModelServer]:
    """The fake model server, with what it received forgotten before and after the test."""
    fake_server.reset()
    yield fake_server
    fake_server.reset()


def stack_env(broker_env: dict[str, str], fake_url: str, **overrides: str) -> dict[str, str]:
    """Environment of a gateway with its own queue and key prefix."""
    run = uuid.uuid4().hex[:10]
    return {
        "ENV_FILE": "",
        **broker_env,
        "QUEUE_NAME": f"test-queue-{run}",
        "REDIS_PREFIX": f"test-{run}",
        "INNER_LLM_URL": fake_url,
        "LLM_MAX_RETRIES": "2",
        "LLM_RETRY_BACKOFF": "0.05",
        "WAIT_TIMEOUT": "60",
        # A stream's reader that leaves: its job cancelled a second later (tests of
        # resuming set their own).
        "STREAM_LEAVE_GRACE": "1",
        # POST /v1/responses/compact seals with it (unset: refused with 503).
        "COMPACTION_SECRET": "test-compaction-secret-of-32-chars-at-least",
        **overrides,
    }


@dataclass
class Stack:
    """A running gateway: its environment, API address and processes."""

    env: dict[str, str]
    url: str
    processes: Processes

    @property
    def config(self) -> Config:
        return config_from_env(self.env)


StackFactory = Callable[..., Stack]


def _stack_factory(
    tmp: Path, fake: FakeModelServer, broker_env: dict[str, str]
) -> tuple[StackFactory, Callable[[], None]]:
    made: list[Stack] = []

    def make(workers: int = 1, api: bool = True, concurrency: int | None = None, **overrides: str) -> Stack:
        # Files and batches in a folder of the stack's own (API and workers share it).
        files = str(tmp / f"files-{uuid.uuid4().hex[:8]}")
        env = stack_env(broker_env, fake.url, **{"FILE_STORE_URL": files, **overrides})
        processes = Processes(tmp)
        stack = Stack(env, "", processes)
        made.append(stack)
        # Started together, then awaited: none waits for another to be ready.
        started = [
            processes.worker(env, name=f"worker{n}", concurrency=concurrency, wait=False) for n in range(workers)
        ]
        if api:
            port = free_port()
            stack.url = f"http://127.0.0.1:{port}"
            server = processes.api(env, port, wait=False)
        for worker in started:
            wait_for_output(worker, WORKER_READY)
        if api:
            wait_for_http(server, f"{stack.url}/health")
        return stack

    def cleanup() -> None:
        for stack in made:
            stack.processes.stop_all()
            remove_traces(stack.config)

    return make, cleanup


@pytest.fixture
def make_stack(fake_server: FakeModelServer, broker_env: dict[str, str], tmp_path: Path) -> Iterator[StackFactory]:
    """Start a gateway of its own for one test: ``make_stack(workers=0, WAIT_TIMEOUT="1")``."""
    make, cleanup = _stack_factory(tmp_path, fake_server, broker_env)
    yield make
    cleanup()


@pytest.fixture(scope="session")
def shared_stack(
    fake_server: FakeModelServer, broker_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    make, cleanup = _stack_factory(tmp_path_factory.mktemp("stack"), fake_server, broker_env)
    yield make()
    cleanup()


@pytest.fixture
def stack(shared_stack: Stack, fake: FakeModelServer) -> Stack:
    """The gateway most tests share: one worker, one API, the fake model server behind."""
    return shared_stack
