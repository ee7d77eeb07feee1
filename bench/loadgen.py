"""An async HTTP/1.1 load generator, light enough on CPU not to be what is measured.

It speaks just enough HTTP for JSON POSTs on keep-alive connections (a general
client such as httpx costs about as much CPU per request as the server under test).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Outcome:
    """Every request's latency (seconds) and status (0: no answer: refused, reset or cut off)."""

    latencies: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> int:
        return self.statuses.count(200)

    def record(self, started: float, status: int) -> None:
        self.latencies.append(time.perf_counter() - started)
        self.statuses.append(status)


class Connection:
    """One keep-alive connection sending JSON POSTs to one URL."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.path = parts.path or "/"
        self._extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, body: bytes) -> tuple[int, bytes]:
        """Send one request and read its answer (status, body)."""
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)
        assert self._reader is not None
        head = (
            f"POST {self.path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"{self._extra}Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self._writer.write(head + body)
        status_line = await self._reader.readline()
        if not status_line:
            raise ConnectionResetError("server closed the connection")
        status = int(status_line.split()[1])
        length = 0
        while (line := await self._reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await self._reader.readexactly(length)

    async def status_of(self, body: bytes) -> int:
        """The status of one request; 0 when it got no answer (the connection is then closed)."""
        try:
            status, _ = await self.post(body)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            self.close()
            return 0
        return status

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


async def closed_loop(
    url: str,
    body: dict[str, Any],
    clients: int,
    requests: int,
    deadline: float = 600,
    headers: dict[str, str] | None = None,
) -> Outcome:
    """`clients` clients, each sending its next request when its last is answered, `requests` in all.

    Requests not answered within `deadline` seconds count with status 0.
    """
    payload = encode(body)
    outcome = Outcome()
    remaining = requests

    async def client() -> None:
        nonlocal remaining
        connection = Connection(url, headers)
        try:
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                outcome.record(started, await connection.status_of(payload))
        finally:
            connection.close()

    started = time.perf_counter()
    tasks = [asyncio.create_task(client()) for _ in range(clients)]
    _, pending = await asyncio.wait(tasks, timeout=deadline)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    outcome.seconds = time.perf_counter() - started
    unanswered = requests - len(outcome.statuses)
    outcome.statuses += [0] * unanswered
    outcome.latencies += [deadline] * unanswered
    return outcome


async def for_duration(
    url: str,
    body: dict[str, Any],
    clients: int,
    seconds: float,
    grace: float = 10,
    headers: dict[str, str] | None = None,
    every_sent: bool = False,
) -> Outcome:
    """A closed loop of `clients` that stops sending after `seconds`; only answers in that time count
    (with `every_sent`, the answers to every request sent in that time, however late).
    Requests still unanswered `grace` seconds later are abandoned (their connections closed)."""
    payload = encode(body)
    outcome = Outcome()
    stop_at = time.perf_counter() + seconds

    async def client() -> None:
        connection = Connection(url, headers)
        try:
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                status = await connection.status_of(payload)
                if every_sent or time.perf_counter() <= stop_at:
                    outcome.record(started, status)
        finally:
            connection.close()

    started = time.perf_counter()
    tasks = [asyncio.ensure_future(client()) for _ in range(clients)]
    _, pending = await asyncio.wait(tasks, timeout=seconds + grace)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    outcome.seconds = min(time.perf_counter() - started, seconds)
    return outcome


async def open_loop(url: str, body: dict[str, Any], rate: float, seconds: float) -> Outcome:
    """Requests started at a fixed `rate` per second for `seconds`, whatever the answers do."""
    payload = encode(body)
    outcome = Outcome()
    idle: list[Connection] = []

    async def one() -> None:
        connection = idle.pop() if idle else Connection(url)
        started = time.perf_counter()
        status = await connection.status_of(payload)
        if status:
            idle.append(connection)
        outcome.record(started, status)

    started = time.perf_counter()
    tasks = []
    for index in range(int(rate * seconds)):
        delay = started + index / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    outcome.seconds = time.perf_counter() - started
    for connection in idle:
        connection.close()
    return outcome
