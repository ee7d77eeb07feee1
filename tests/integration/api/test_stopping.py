"""A loop of Redis commands stops when it is stopped (api/stopping.py), though the
asyncio client may swallow a cancellation that comes while a command runs."""

from __future__ import annotations

import asyncio
import random

import pytest
import redis.asyncio as aioredis

from api.stopping import stop
from testing.processes import REDIS

pytestmark = pytest.mark.integration


def test_every_loop_of_redis_commands_ends_when_stopped() -> None:
    async def loop(client: aioredis.Redis, key: str) -> None:
        while True:
            await client.set(key, "1", ex=5)
            await asyncio.sleep(0)

    async def main() -> int:
        client = aioredis.Redis(host=REDIS[0], port=REDIS[1])
        ended = 0
        try:
            for n in range(100):
                task = asyncio.create_task(loop(client, f"test-stopping-{n % 4}"))
                # Stopped at any point of its loop: in a command, or between two.
                await asyncio.sleep(random.random() * 0.002)
                await asyncio.wait_for(stop([task]), 30)
                ended += task.done()
        finally:
            await client.aclose()
        return ended

    assert asyncio.run(main()) == 100
