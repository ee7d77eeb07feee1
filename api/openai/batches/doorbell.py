"""Rung when a batch is created or cancelled in this process: the keeper, which looks at
the batches every BATCH_POLL_SECONDS, looks at once. Made first and handed to both (the
batches resource rings it; the keeper listens), so neither holds the other."""

from __future__ import annotations

import asyncio
import contextlib


class Doorbell:
    """A ring heard by whoever waits for it now (`wait`), or by the next look (`rung`)."""

    def __init__(self) -> None:
        self._pending = asyncio.Event()  # rung since the keeper last looked
        self._now = asyncio.Event()  # set (and replaced) at each ring: every waiter hears it

    def ring(self) -> None:
        """Something changed: look now."""
        self._pending.set()
        rung, self._now = self._now, asyncio.Event()
        rung.set()

    async def rung(self, seconds: float) -> None:
        """Until rung (or rung since the last call), for `seconds` at most."""
        await _within(self._pending.wait(), seconds)
        self._pending.clear()

    async def wait(self, seconds: float) -> None:
        """Until the next ring, for `seconds` at most."""
        await _within(self._now.wait(), seconds)


async def _within(waiting: object, seconds: float) -> None:
    """Await `waiting` for `seconds` at most. Not asyncio.wait_for: on Python 3.11 it
    swallows a cancellation that comes as the event is set (the watcher of a batch
    cancelled just as the keeper was woken went on for ever, and its batch with it)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await waiting  # type: ignore[misc]
