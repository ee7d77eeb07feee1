"""Redis at the edge of a unit test: a client that records what a module sends and
answers what the test says.

The module under test talks to it as to redis-py's client: `register_script` (its
scripts are named as shared/contract/scripts.py names them), plain commands, and
pipelines. Nothing of Redis is emulated: each script and command answers from
`answers` (a value, or a function of the call), else None; the Lua itself runs on a
real Redis in the integration tests. `away` makes every call fail as a Redis that is
restarting does.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from shared.contract import scripts


def script_name(source: str) -> str:
    """The name shared/contract/scripts.py gives `source`."""
    for name, value in vars(scripts).items():
        if name.isupper() and value == source:
            return name
    raise AssertionError("a script that is not the contract's")


def arity(name: str) -> tuple[int, int]:
    """The most KEYS and ARGV the contract's script `name` reads (KEYS[n], ARGV[n])."""
    source = getattr(scripts, name)
    keys = [int(n) for n in re.findall(r"KEYS\[(\d+)\]", source)]
    argv = [int(n) for n in re.findall(r"ARGV\[(\d+)\]", source)]
    return max(keys, default=0), max(argv, default=0)


@dataclass
class Call:
    """One command or script run: its name (a script's as the contract names it), and arguments."""

    name: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def keys(self) -> list[Any]:
        return list(self.kwargs.get("keys") or [])

    @property
    def argv(self) -> list[Any]:
        return list(self.kwargs.get("args") or [])


class ScriptedRedis:
    """A redis-py client whose answers a test writes (see the module's docstring)."""

    def __init__(self, answers: dict[str, Any] | None = None) -> None:
        self.answers: dict[str, Any] = dict(answers or {})
        self.calls: list[Call] = []
        self.away: Exception | None = None  # raised by every call while set
        self.called = threading.Condition()

    def register_script(self, source: str) -> Callable[..., Any]:
        name = script_name(source)

        def run(keys: Any = None, args: Any = None, client: Any = None) -> Any:
            target = client if client is not None else self
            return target._run(Call(name, (), {"keys": list(keys or []), "args": list(args or [])}))

        return run

    def pipeline(self, transaction: bool = True) -> Pipeline:
        return Pipeline(self)

    def named(self, name: str) -> list[Call]:
        """The calls of `name` so far."""
        with self.called:
            return [call for call in self.calls if call.name == name]

    def wait_for(self, name: str, count: int = 1, timeout: float = 5.0) -> list[Call]:
        """The calls of `name`, once there are `count` of them (another thread makes them)."""
        with self.called:
            self.called.wait_for(lambda: len([c for c in self.calls if c.name == name]) >= count, timeout)
            return [call for call in self.calls if call.name == name]

    def _run(self, call: Call) -> Any:
        with self.called:
            self.calls.append(call)
            self.called.notify_all()
        if self.away is not None:
            raise self.away
        answer = self.answers.get(call.name)
        if callable(answer):
            return answer(call)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *args, **kwargs: self._run(Call(name, args, kwargs))


class Pipeline:
    """Commands queued, sent at `execute` (each recorded as it is sent), answered in order."""

    def __init__(self, client: ScriptedRedis) -> None:
        self._client = client
        self._queued: list[Call] = []

    @property
    def queued(self) -> list[Call]:
        """The commands queued, not sent yet."""
        return list(self._queued)

    def _run(self, call: Call) -> None:
        self._queued.append(call)

    def register_script(self, source: str) -> Callable[..., Any]:
        return self._client.register_script(source)

    def execute(self) -> list[Any]:
        queued, self._queued = self._queued, []
        return [self._client._run(call) for call in queued]

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *_: Any) -> None:
        self._queued = []

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)

        def queue(*args: Any, **kwargs: Any) -> Pipeline:
            self._run(Call(name, args, kwargs))
            return self

        return queue


AWAY = redis.ConnectionError("Error 111 connecting to redis:6379. Connection refused.")
