"""Stopping asyncio tasks that may swallow a cancellation.

redis-py's asyncio client (8.1) sometimes returns a command's answer to a task that was
cancelled while the command ran: the cancellation is lost, and a loop of Redis commands
goes on as if nothing had asked it to stop (tests/integration/api/test_stopping.py stops such loops).
A loop stopped by one `cancel()` then never ends, nor does whoever awaits it: a batch's
watcher kept its batch in progress for ever, a shutdown waited for its loops. `stop`
asks again until each task has ended.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

AGAIN_SECONDS = 0.05  # how long a cancelled task is given before it is asked again


async def stop(tasks: Iterable[asyncio.Task[Any] | None]) -> None:
    """Cancel `tasks` and wait until each has ended, cancelling again any that goes on."""
    pending = {task for task in tasks if task is not None and not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=AGAIN_SECONDS)
