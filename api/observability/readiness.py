"""Readiness: whether every part a job needs answers (the broker, the result store, a
worker on each model's queue, each model server).

The parts are checked in the background, at most once every READY_EVERY seconds, and
`/ready` answers the last report at once: a probe costs no broker connection, no call
to a model server, no wait, however many arrive (a caller without a key asking a
hundred times a second included); only the first callers after start wait, together,
for the first round. The checks go on while someone asks (an orchestrator's probe every
few seconds), and stop KEEP_CHECKING seconds after the last ask.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import httpx
import redis.asyncio as aioredis
from pydantic import SecretStr

from api.jobs.queue import JobQueue
from shared.registry import Model, Registry, Server

log = logging.getLogger(__name__)

READY_TIMEOUT = 2.0  # seconds each check may take
READY_EVERY = 5.0  # seconds between two rounds of checks
KEEP_CHECKING = 60.0  # seconds the checks go on after the last ask
FIRST_WAIT = 2 * READY_TIMEOUT + 2  # the most the first callers wait for the first round


class _Failed(Exception):
    """A check's own account of what is wrong (it names no address)."""


@dataclass(frozen=True)
class Report:
    """The last round of checks: whether all passed, each check, when (time.time())."""

    ready: bool
    checks: dict[str, dict[str, Any]]
    at: float


class Readiness:
    """The readiness of this API process's parts, checked in the background (one per process)."""

    def __init__(self, redis: aioredis.Redis, queue: JobQueue, registry: Registry) -> None:
        self._redis = redis
        self._queue = queue
        self._registry = registry
        self._report: Report | None = None
        self._asked = 0.0
        self._task: asyncio.Task[None] | None = None
        self._first = asyncio.Event()

    async def last(self) -> Report | None:
        """The last report; asking keeps the checks going. The first callers wait for the
        first round (one round, however many they are; None if it takes too long)."""
        self.current()
        if self._report is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._first.wait(), FIRST_WAIT)
        return self._report

    def current(self) -> Report | None:
        """The last report, at once (None before the first round ends); asking keeps the
        checks going, as `last` does. A scrape of /metrics asks this way: Prometheus
        scraping keeps the parts' gauges fresh without waiting on a round."""
        self._asked = time.monotonic()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._keep_checking(), name="readiness")
        return self._report

    async def close(self) -> None:
        """Stop checking."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _keep_checking(self) -> None:
        while time.monotonic() - self._asked < KEEP_CHECKING:
            try:
                ready, checks = await readiness(self._redis, self._queue, self._registry)
            except Exception:  # a check's own bug must not end the checks
                log.exception("readiness checks failed")
                ready, checks = False, {"checks": {"ok": False, "detail": "the checks failed (see the API's log)"}}
            before = self._report
            self._report = Report(ready, checks, time.time())
            self._first.set()
            if before is None or before.ready != ready:
                failing = ", ".join(name for name, check in checks.items() if not check["ok"])
                log.log(
                    logging.INFO if ready else logging.WARNING, "ready: %s%s", ready, f" ({failing})" * bool(failing)
                )
            await asyncio.sleep(READY_EVERY)


async def readiness(
    redis: aioredis.Redis, queue: JobQueue, registry: Registry
) -> tuple[bool, dict[str, dict[str, Any]]]:
    """One round of checks: (all ready, each check with its detail). A detail says which
    part failed and how, never where it lives (addresses go to the log)."""
    timeout = READY_TIMEOUT
    loop = asyncio.get_running_loop()

    async def result_store() -> str:
        await redis.ping()
        return "answers"

    async def broker() -> str:
        await loop.run_in_executor(None, queue.check)
        return "connected"

    async def server(client: httpx.AsyncClient, server: Server) -> str:
        response = await client.get(f"{server.url}/v1/models", headers=_auth(server.api_key))
        if response.status_code >= 500:
            raise _Failed(f"answered {response.status_code}")
        return f"answered {response.status_code}"

    async def model_server(model: Model) -> str:
        async with httpx.AsyncClient(timeout=timeout) as client:
            if len(model.servers) == 1:
                return await server(client, model.servers[0])
            # Several servers: ready while one answers; which servers, and why, are at /scaling.
            answers = await asyncio.gather(*(server(client, each) for each in model.servers), return_exceptions=True)
        up = sum(not isinstance(answer, BaseException) for answer in answers)
        if not up:
            raise _Failed(f"no server of model {model.name} answers (of {len(answers)}; each at /scaling)")
        return f"{up} of {len(answers)} servers answer"

    checks: dict[str, Any] = {"broker": broker(), "result_store": result_store()}
    for model in registry.models:
        checks[f"model_server:{model.name}"] = model_server(model)
    names = list(checks)
    outcomes = await asyncio.gather(
        *(asyncio.wait_for(c, timeout + 1) for c in checks.values()), return_exceptions=True
    )
    report: dict[str, dict[str, Any]] = {}
    for name, outcome in zip(names, outcomes, strict=True):
        if isinstance(outcome, _Failed):
            report[name] = {"ok": False, "detail": str(outcome)}
        elif isinstance(outcome, BaseException):
            log.info("readiness: %s does not answer: %s: %s", name, type(outcome).__name__, outcome)
            report[name] = {"ok": False, "detail": f"does not answer ({type(outcome).__name__})"}
        else:
            report[name] = {"ok": True, "detail": outcome}
    consumers = await loop.run_in_executor(None, queue.consumers, timeout)
    for model in registry.models:
        count = consumers.get(model.queue, 0)
        report[f"workers:{model.name}"] = {"ok": count > 0, "detail": f"{count} worker(s) on queue {model.queue}"}
    return all(check["ok"] for check in report.values()), report


def _auth(key: SecretStr | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key.get_secret_value()}"} if key else {}
