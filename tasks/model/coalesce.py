"""Embedding jobs of one model joined into full model-server calls.

A GPU embeds 64 inputs in about the time it embeds one: what a call costs is mostly
its own, not its inputs'. So a worker joins the inputs of the embedding jobs that
arrive together into one ``/v1/embeddings`` call, and splits the answer back per job:

- the first job of a call (its *leader*) waits up to EMBED_COALESCE_WAIT_MS for others
  (1 ms by default: what a job alone pays), or until EMBED_COALESCE_MAX_INPUTS inputs are
  in; then, once fewer than EMBED_CALLS_IN_FLIGHT calls of the model are in flight from
  this process, it makes the call, in its own thread. While it waits for that, its call
  stays open to more jobs: a busy server's calls grow (up to the most inputs a call
  takes), as a GPU's batches do, instead of queuing up small. Jobs join only a call of
  their own kind: texts or token ids, the same options (model, dimensions, user, a
  server's own fields).
- a job whose inputs alone fill a call is its own call, at once.
- the call's failure is each job's (each fails, or is retried, as any job is); one job
  cancelled leaves the call to the others: a cancelled follower stops waiting at once,
  a cancelled leader still makes the call for the others and then stops.
- usage: the call's prompt tokens are shared among its jobs by their inputs' length
  (token ids count exactly).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tasks.model.cancel import Cancel, Cancelled
from tasks.model.protocol import Embedded

Inputs = list[str] | list[list[int]]
Call = Callable[[Inputs, dict[str, Any]], Embedded]


@dataclass
class _Batch:
    """One call in the making: the jobs' inputs in turn."""

    inputs: list[Any] = field(default_factory=list)
    full: threading.Event = field(default_factory=threading.Event)  # to call now
    done: threading.Event = field(default_factory=threading.Event)
    answer: Embedded | None = None
    error: BaseException | None = None
    jobs: int = 0
    waiters: list[threading.Event] = field(default_factory=list)  # its other jobs'


@dataclass
class Coalesced:
    """One job's share of a call."""

    embedded: Embedded
    call_inputs: int  # how many inputs the call carried, its own included


class Coalescer:
    """The calls of one model (one per worker process), joined across its job threads."""

    def __init__(self, call: Call, wait: float, max_inputs: int, in_flight: int = 2) -> None:
        self._call = call
        self._wait = wait
        self._max = max_inputs
        self._calls = threading.BoundedSemaphore(in_flight)
        self._lock = threading.Lock()
        self._open: dict[str, _Batch] = {}

    def embed(self, inputs: Inputs, options: dict[str, Any], cancel: Cancel | None = None) -> Coalesced:
        if self._wait <= 0:
            return Coalesced(self._call(inputs, options), len(inputs))
        if len(inputs) >= self._max:
            with self._calls:
                return Coalesced(self._call(inputs, options), len(inputs))
        kind = "tokens" if inputs and not isinstance(inputs[0], str) else "text"
        key = json.dumps([kind, options], sort_keys=True)
        with self._lock:
            batch = self._open.get(key)
            if batch is not None and len(batch.inputs) + len(inputs) > self._max:
                batch.full.set()  # no room: its leader calls now, and this job starts the next
                del self._open[key]
                batch = None
            leader = batch is None
            if batch is None:
                batch = self._open[key] = _Batch()
            start = len(batch.inputs)
            batch.inputs.extend(inputs)
            batch.jobs += 1
            woken = None if leader else threading.Event()
            if woken is not None:
                batch.waiters.append(woken)
            if len(batch.inputs) >= self._max:
                batch.full.set()
                self._open.pop(key, None)
        if woken is None:
            self._lead(key, batch, options)
        else:
            _follow(batch, woken, cancel)
        if cancel is not None and cancel.is_set():
            raise Cancelled
        if batch.error is not None:
            raise batch.error
        assert batch.answer is not None
        return Coalesced(_share(batch, start, len(inputs)), len(batch.inputs))

    def _lead(self, key: str, batch: _Batch, options: dict[str, Any]) -> None:
        batch.full.wait(self._wait)
        self._calls.acquire()  # the call stays open to more jobs meanwhile
        with self._lock:
            if self._open.get(key) is batch:
                del self._open[key]  # closed: later jobs start another call
            inputs = list(batch.inputs)
        try:
            batch.answer = self._call(inputs, options)
        except BaseException as exc:  # noqa: BLE001 - every job of the call gets it
            batch.error = exc
        finally:
            self._calls.release()
            with self._lock:
                batch.done.set()
                waiters = list(batch.waiters)
            for woken in waiters:
                woken.set()


class _Wake:
    """A cancel of a job waiting for its call: it stops waiting (the call goes on)."""

    def __init__(self, woken: threading.Event) -> None:
        self._woken = woken

    def abort(self) -> None:
        self._woken.set()


def _follow(batch: _Batch, woken: threading.Event, cancel: Cancel | None) -> None:
    if cancel is not None:
        cancel.attach(_Wake(woken))
    try:
        woken.wait()
    finally:
        if cancel is not None:
            cancel.attach(None)


def _share(batch: _Batch, start: int, count: int) -> Embedded:
    """The job's vectors of the call's answer, and its share of the call's tokens."""
    answer = batch.answer
    assert answer is not None
    vectors = answer.vectors[start : start + count]
    usage = None
    total = int((answer.usage or {}).get("prompt_tokens") or 0)
    if answer.usage is not None:
        mine = (
            total
            if batch.jobs == 1
            else round(total * _size(batch.inputs[start : start + count]) / _size(batch.inputs))
        )
        usage = {"prompt_tokens": mine, "total_tokens": mine}
    return Embedded(vectors, usage, answer.model)


def _size(inputs: list[Any]) -> int:
    return max(1, sum(len(item) for item in inputs))
