"""The batches' doorbell: the keeper hears each ring, and its waits end when their task
is cancelled, even as the bell rings."""

from __future__ import annotations

import asyncio

import pytest

from api.openai.batches.doorbell import Doorbell

pytestmark = pytest.mark.unit


def test_a_wait_cancelled_as_the_bell_rings_is_cancelled() -> None:
    # asyncio.wait_for on Python 3.11 returned here instead: the batch's watcher went on
    # for ever, and the batch never finished.
    async def watcher(bell: Doorbell) -> None:
        while True:
            await bell.wait(5)
            await asyncio.sleep(0)

    async def main() -> int:
        cancelled = 0
        for _ in range(50):
            bell = Doorbell()
            task = asyncio.create_task(watcher(bell))
            await asyncio.sleep(0.001)
            bell.ring()
            task.cancel()
            try:
                await asyncio.wait_for(task, 2)
            except asyncio.CancelledError:
                cancelled += 1
        return cancelled

    assert asyncio.run(main()) == 50


def test_a_ring_before_the_keeper_looks_is_heard_once_by_its_next_look() -> None:
    async def main() -> tuple[bool, bool, bool]:
        bell = Doorbell()
        bell.ring()
        started = asyncio.get_running_loop().time()
        await bell.rung(5)  # rung before: returns at once
        heard_at_once = asyncio.get_running_loop().time() - started < 1
        second = asyncio.create_task(bell.rung(5))  # nothing rung since: waits
        await asyncio.sleep(0.05)
        waiting = not second.done()
        bell.ring()
        await asyncio.wait_for(second, 1)
        return heard_at_once, waiting, second.done()

    assert asyncio.run(main()) == (True, True, True)


def test_every_watcher_waiting_hears_one_ring() -> None:
    async def main() -> int:
        bell = Doorbell()
        watchers = [asyncio.create_task(bell.wait(5)) for _ in range(3)]
        await asyncio.sleep(0.01)
        bell.ring()
        await asyncio.wait_for(asyncio.gather(*watchers), 1)
        return sum(task.done() for task in watchers)

    assert asyncio.run(main()) == 3
