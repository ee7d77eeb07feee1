"""Stopping a model call from another thread (a cancelled job)."""

from __future__ import annotations

import threading
from typing import Protocol


class Abortable(Protocol):
    """What a cancel stops: a reply being read (tasks/model/http.py), a wait for a slot (servers.py)."""

    def abort(self) -> None: ...


class Cancelled(Exception):
    """The job was cancelled: the model call was stopped and its connection closed."""


class Cancel:
    """Stops a model call from another thread: the call sees it between chunks, and
    its connection is closed at once, so the model server stops generating."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._reply: Abortable | None = None

    def set(self) -> None:
        with self._lock:
            self._event.set()
            reply = self._reply
        if reply is not None:
            reply.abort()

    def is_set(self) -> bool:
        return self._event.is_set()

    def attach(self, reply: Abortable | None) -> None:
        with self._lock:
            self._reply = reply
        if reply is not None and self._event.is_set():
            reply.abort()
