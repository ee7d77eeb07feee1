"""The batch keeper's waits end when their task is cancelled, even as they are woken."""

from __future__ import annotations

import asyncio

import pytest

from api.batches.keeper import _wait

pytestmark = pytest.mark.unit


def test_a_wait_cancelled_as_its_event_is_set_is_cancelled() -> None:
    # asyncio.wait_for on Python 3.11 returned here instead: the batch's watcher went on
    # for ever, and the batch never finished.
    async def watcher(event: asyncio.Event) -> None:
        while True:
            await _wait(event, 5)
            await asyncio.sleep(0)

    async def main() -> int:
        cancelled = 0
        for _ in range(50):
            event = asyncio.Event()
            task = asyncio.create_task(watcher(event))
            await asyncio.sleep(0.001)
            event.set()
            task.cancel()
            try:
                await asyncio.wait_for(task, 2)
            except asyncio.CancelledError:
                cancelled += 1
        return cancelled

    assert asyncio.run(main()) == 50
