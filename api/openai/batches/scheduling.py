"""How many of the batches' lines run at once, so that interactive requests keep their
latency: at most ``BATCH_LINES_IN_FLIGHT`` lines of one model queued or running per API
process, over all its batches, and at most ``BATCH_LINES_BESIDE_INTERACTIVE`` while the
process awaits interactive requests. Those then find free worker slots, a short queue
and a worker whose CPU is not taken by batch lines (bench/ scenario f measures it)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

YIELD_SECONDS = 0.005  # how often a line held back for interactive requests looks again


class LineScheduler:
    """Slots for batches' lines, by model (one per API process)."""

    def __init__(self, in_flight: int, beside_interactive: int, awaiting: Callable[[], int]) -> None:
        """`awaiting()` is how many jobs the process awaits now, lines included."""
        self._in_flight = in_flight
        self._beside = beside_interactive
        self._awaiting = awaiting
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._running: dict[str, int] = {}  # lines in flight, by model
        self.lines = 0  # lines in flight, over every model

    def running(self, model: str) -> int:
        """Lines of `model` in flight."""
        return self._running.get(model, 0)

    def interactive(self) -> bool:
        """Whether this process awaits jobs of its own clients (not batches' lines)."""
        return self._awaiting() > self.lines

    @asynccontextmanager
    async def slot(self, model: str) -> AsyncIterator[None]:
        """Hold one of `model`'s slots while a line of it runs, once its turn has come."""
        slots = self._slots.get(model)
        if slots is None:
            slots = self._slots[model] = asyncio.Semaphore(self._in_flight)
        async with slots:
            # While interactive requests are awaited, fewer lines of the model run beside
            # them. Polled: an event set by every interactive request would cost each of them.
            while self.interactive() and self.running(model) >= self._beside:  # noqa: ASYNC110
                await asyncio.sleep(YIELD_SECONDS)
            self.lines += 1
            self._running[model] = self.running(model) + 1
            try:
                yield
            finally:
                self.lines -= 1
                self._running[model] -= 1
