"""Calls on the file store from the event loop (conversations, stored responses): each
on a thread, a failure answered as the file store being unavailable (503)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from api.errors import FileStoreUnavailable

T = TypeVar("T")

log = logging.getLogger(__name__)


async def in_file_store(call: Callable[..., T], *args: Any) -> T:
    """`call(*args)` on a thread; FileStoreUnavailable when the store fails (where it
    lives and why go to the log, not to the answer)."""
    try:
        return await asyncio.get_running_loop().run_in_executor(None, call, *args)
    except (OSError, ValueError) as exc:
        log.warning("file store unavailable: %s: %s", type(exc).__name__, exc)
        raise FileStoreUnavailable(f"file store unavailable ({type(exc).__name__})") from None
