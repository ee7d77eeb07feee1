"""How many of the batches' lines run at once, so that interactive requests keep their
latency: at most ``BATCH_LINES_IN_FLIGHT`` lines of one model queued or running per API
process, over all its batches, and at most ``BATCH_LINES_BESIDE_INTERACTIVE`` while the
process awaits interactive requests. Those then find free worker slots, a short queue
and a worker whose CPU is not taken by batch lines (bench/ scenario f measures it).

A model's slots are handed out in turns by tenant: each batch runs up to
``BATCH_LINES_IN_FLIGHT`` lines at once, so in one line of waiters a tenant with ten
batches would take ten turns to another tenant's one, and another tenant's batch could
wait past its window behind them."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager

YIELD_SECONDS = 0.005  # how often a line held back for interactive requests looks again


class TenantTurns:
    """A model's slots for lines: free ones taken at once; while lines wait, a freed slot
    goes to the next tenant in turn (then that tenant goes to the back), and each
    tenant's own lines in the order they came."""

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiting: dict[str, deque[asyncio.Future[None]]] = {}  # tenants in turn order

    async def acquire(self, tenant: str) -> None:
        """Wait for a slot of `tenant`'s turn."""
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return
        turn = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(tenant, deque()).append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.release()  # handed the slot as it was cancelled: the next in turn takes it
            else:
                line = self._waiting.get(tenant)
                if line is not None and turn in line:
                    line.remove(turn)
                    if not line:
                        del self._waiting[tenant]
            raise

    def release(self) -> None:
        """Give a slot back: to the next tenant in turn that waits, else free (so a
        slot is free only while no line waits)."""
        if not self._waiting:
            self._free += 1
            return
        tenant = next(iter(self._waiting))
        line = self._waiting.pop(tenant)
        turn = line.popleft()
        if line:
            self._waiting[tenant] = line  # its next line waits for its next turn
        turn.set_result(None)


class LineScheduler:
    """Slots for batches' lines, by model (one per API process)."""

    def __init__(
        self,
        in_flight: int,
        beside_interactive: int,
        awaiting: Callable[[], int],
        held_back: Callable[[str], bool] = lambda queue: False,
    ) -> None:
        """`awaiting()` is how many jobs the process awaits now, lines included;
        `held_back(queue)` whether tenants' jobs of that model's queue wait for room in it
        (fair sharing, api/tenancy/fair_share.py): jobs of any API process's clients."""
        self._in_flight = in_flight
        self._beside = beside_interactive
        self._awaiting = awaiting
        self._held_back = held_back
        self._slots: dict[str, TenantTurns] = {}
        self._running: dict[str, int] = {}  # lines in flight, by model
        self.lines = 0  # lines in flight, over every model
        self.awaited = 0  # lines whose results this process awaits now (inside `awaiting`)

    def running(self, model: str) -> int:
        """Lines of `model` in flight."""
        return self._running.get(model, 0)

    def interactive(self) -> bool:
        """Whether this process awaits jobs of its own clients (not batches' lines).

        Against the lines awaited, not the lines in flight: a line answered holds its
        slot while its record is written, awaited no more, and with a few such lines an
        interactive request awaited looked like none. Then all BATCH_LINES_IN_FLIGHT
        lines ran beside it, and on a contended model they kept the model's queue full
        enough that no tenant's job was moved into it (api/tenancy/fair_share.py)."""
        return self._awaiting() > self.awaited

    @contextmanager
    def awaiting(self) -> Iterator[None]:
        """Around the wait for a line's result: the line is among those awaited."""
        self.awaited += 1
        try:
            yield
        finally:
            self.awaited -= 1

    @asynccontextmanager
    async def slot(self, model: str, tenant: str, queue: str = "") -> AsyncIterator[None]:
        """Hold one of `model`'s slots while a line of `tenant`'s batch runs, once its turn
        has come; `queue` is the model's."""
        slots = self._slots.get(model)
        if slots is None:
            slots = self._slots[model] = TenantTurns(self._in_flight)
        await slots.acquire(tenant)
        try:
            # While interactive requests are awaited, fewer lines of the model run beside
            # them. Polled: an event set by every interactive request would cost each of them.
            # So do they while tenants' jobs wait for room in the model's queue: lines
            # published to it directly would keep it full, and those jobs waiting.
            while (self.interactive() or self._held_back(queue)) and self.running(model) >= self._beside:  # noqa: ASYNC110
                await asyncio.sleep(YIELD_SECONDS)
            self.lines += 1
            self._running[model] = self.running(model) + 1
            try:
                yield
            finally:
                self.lines -= 1
                self._running[model] -= 1
        finally:
            slots.release()
