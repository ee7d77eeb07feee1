"""Bookkeeping never fails a job that has its answer: Redis restarted under a fleet's
load (a model with two servers, chat streamed and not) while the workers give back
their servers' slots and relay streams, and the API reads them. Every request accepted
is answered, streamed or not; those refused while Redis was down are refused as such
(503 naming the result store), before anything was accepted."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from testing.fake_model_server import FakeModelServer
from testing.load import redis_binary, wait_until
from testing.processes import RedisServer
from tests.conftest import StackFactory

pytestmark = pytest.mark.fault

CALLERS = 24
SECONDS = 14


async def _chat(client: httpx.AsyncClient, job: str) -> tuple[int, str]:
    ask = {"model": "m", "messages": [{"role": "user", "content": f"q {job}"}]}
    answer = await client.post("/v1/chat/completions", json=ask)
    if answer.status_code != 200:
        return answer.status_code, answer.text[:200]
    return 200, answer.json()["choices"][0]["message"]["content"]


async def _streamed(client: httpx.AsyncClient, job: str) -> tuple[int, str]:
    ask = {"model": "m", "messages": [{"role": "user", "content": f"q {job}"}], "stream": True}
    async with client.stream("POST", "/v1/chat/completions", json=ask) as answer:
        if answer.status_code != 200:
            return answer.status_code, (await answer.aread()).decode()[:200]
        text, ended = "", False
        async for line in answer.aiter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                ended = True
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                return 200, f"error event: {chunk['error']}"
            text += "".join(choice["delta"].get("content") or "" for choice in chunk["choices"])
        return 200, text if ended else f"no [DONE] after {text!r}"


def test_a_redis_restart_under_a_fleets_load_fails_no_answered_job(
    make_stack: StackFactory, fake: FakeModelServer, servers: Any, broker_env: dict[str, str], tmp_path: Path
) -> None:
    if not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("RabbitMQ only: Redis here is the bookkeeping's (a Valkey broker's restart: test_faults.py)")
    server = RedisServer(redis_binary(broker_env), tmp_path / "redis").start()
    try:
        one, two = servers(latency=0.05), servers(latency=0.05)
        for fake_server in (one, two):
            fake_server.chunk_delay = 0.01
        models = json.dumps({"models": [{"name": "m", "servers": [{"url": one.url, "slots": 4},
                                                                   {"url": two.url, "slots": 4}]}]})  # fmt: skip
        stack = make_stack(MODELS=models, concurrency=16, REDIS_HOST="127.0.0.1", REDIS_PORT=str(server.port))
        told: dict[str, tuple[int, str]] = {}
        stop = time.monotonic() + SECONDS

        async def caller(n: int) -> None:
            async with httpx.AsyncClient(base_url=stack.url, timeout=90) as client:
                count = 0
                while time.monotonic() < stop:
                    job = f"c{n}-{count}"
                    count += 1
                    try:
                        told[job] = await (_streamed if count % 2 else _chat)(client, job)
                    except httpx.HTTPError as exc:
                        told[job] = (0, repr(exc))

        def restarts() -> None:
            for n in range(1, 3):
                wait_until(lambda n=n: one.answered + two.answered >= 40 * n, 30, "jobs to run")
                time.sleep(2)
                server.stop()
                time.sleep(0.5)
                server.start()

        async def run() -> None:
            await asyncio.gather(*(caller(n) for n in range(CALLERS)), asyncio.to_thread(restarts))

        asyncio.run(run())
        refused = {job: said for job, (status, said) in told.items() if status == 503}
        accepted = {job: answer for job, answer in told.items() if job not in refused}
        wrong = {job: answer for job, answer in accepted.items() if answer != (200, f"echo: q {job}")}
        print(f"\n[Redis restarts, a fleet] requests={len(told)} refused={len(refused)} wrong={len(wrong)}"
              f" calls={one.answered + two.answered}")  # fmt: skip
        assert not wrong, f"{len(wrong)} of {len(accepted)} accepted requests not answered: {list(wrong.items())[:5]}"
        assert all("result store (Redis) unavailable" in said for said in refused.values()), list(refused.values())[:3]
        assert len(accepted) >= 80  # each restart came after 40 calls more
    finally:
        server.stop()
