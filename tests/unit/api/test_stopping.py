"""Stopping tasks that may swallow a cancellation (api/stopping.py): asked again until
each has ended."""

from __future__ import annotations

import asyncio

import pytest

from api.stopping import stop

pytestmark = pytest.mark.unit


def test_a_task_that_swallows_its_first_cancellation_is_asked_again_until_it_ends() -> None:
    async def main() -> tuple[int, bool, bool]:
        asked = 0

        async def stubborn() -> None:
            nonlocal asked
            while True:
                try:
                    await asyncio.sleep(10)
                except asyncio.CancelledError:
                    asked += 1
                    if asked >= 3:
                        raise  # as redis-py's client may return an answer to a cancelled task, twice

        async def plain() -> None:
            await asyncio.sleep(10)

        tasks = [asyncio.create_task(stubborn()), asyncio.create_task(plain())]
        await asyncio.sleep(0)
        await asyncio.wait_for(stop([*tasks, None]), 5)
        return asked, tasks[0].done(), tasks[1].cancelled()

    assert asyncio.run(main()) == (3, True, True)


def test_nothing_to_stop_returns_at_once() -> None:
    asyncio.run(asyncio.wait_for(stop([None]), 1))
