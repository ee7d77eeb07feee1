"""Embedding jobs of one model and one tenant joined into full model-server calls.

A GPU embeds 64 inputs in about the time it embeds one: what a call costs is mostly
its own, not its inputs'. So a worker joins the inputs of the embedding jobs that
arrive together into one ``/v1/embeddings`` call, and splits the answer back per job:

- the first job of a call (its *leader*) waits up to EMBED_COALESCE_WAIT_MS for others
  (1 ms by default: what a job alone pays), or until EMBED_COALESCE_MAX_INPUTS inputs are
  in; then, once fewer than EMBED_CALLS_IN_FLIGHT calls of the model are in flight from
  this process, it makes the call, in its own thread. While it waits for that, its call
  stays open to more jobs: a busy server's calls grow (up to the most inputs a call
  takes), as a GPU's batches do, instead of queuing up small. Jobs join only a call of
  their own tenant and kind: texts or token ids, the same options (model, dimensions,
  user, a server's own fields). A call is one tenant's: its answer, its failure and
  its tokens are that tenant's alone.
- a job whose inputs alone fill a call is its own call, at once.
- a call the server refuses (a 4xx: an input too long for its context, ...) is made
  again for each of its jobs alone, so only the job at fault fails, with its own error.
  Any other failure of the call is each job's (each fails, or is retried, as any job
  is). One job cancelled leaves the call to the others: a cancelled follower stops
  waiting at once, a cancelled leader still makes the call for the others and then stops.
- usage: a job alone in its call has the call's prompt tokens. Jobs that shared one
  have the call's tokens shared by their inputs' size (token ids count exactly, a text
  by its characters), the shares adding up to the call's: the tenant's count is the
  server's.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shared.contract import ModelServerRejected
from tasks.model.cancel import Cancel, Cancelled
from tasks.model.protocol import Embedded, Turn

Inputs = list[str] | list[list[int]]


# One call of the model: inputs, options, its place in line, and a cancel that stops it
# (a call of one job: that job's; a call of several goes on for the others).
Call = Callable[[Inputs, dict[str, Any], Turn, Cancel | None], Embedded]


@dataclass
class _Batch:
    """One call in the making: the jobs' inputs in turn."""

    inputs: list[Any] = field(default_factory=list)
    full: threading.Event = field(default_factory=threading.Event)  # to call now
    done: threading.Event = field(default_factory=threading.Event)
    answer: Embedded | None = None
    error: BaseException | None = None
    jobs: int = 0
    turn: Turn = field(default_factory=Turn)
    waiters: list[threading.Event] = field(default_factory=list)  # its other jobs'


@dataclass
class Coalesced:
    """One job's share of a call: its vectors and tokens, and the size of the call (its
    tenant's own jobs' inputs, for the worker's log)."""

    embedded: Embedded
    call_inputs: int


class Coalescer:
    """The calls of one model (one per worker process), joined across its job threads."""

    def __init__(self, call: Call, wait: float, max_inputs: int, in_flight: int = 2) -> None:
        self._call = call
        self._wait = wait
        self._max = max_inputs
        self._calls = threading.BoundedSemaphore(in_flight)
        self._lock = threading.Lock()
        self._open: dict[str, _Batch] = {}

    def embed(
        self,
        inputs: Inputs,
        options: dict[str, Any],
        tenant: str | None = None,
        cancel: Cancel | None = None,
        turn: Turn | None = None,
    ) -> Coalesced:
        """`inputs` embedded for `tenant`, in a call with others of its jobs where they arrive together."""
        turn = turn or Turn()
        if self._wait <= 0:
            return Coalesced(self._call(inputs, options, turn, cancel), len(inputs))
        if len(inputs) >= self._max:
            return Coalesced(self._alone(inputs, options, turn, cancel), len(inputs))
        kind = "tokens" if inputs and not isinstance(inputs[0], str) else "text"
        key = json.dumps([tenant, kind, options], sort_keys=True)
        with self._lock:
            batch = self._open.get(key)
            if batch is not None and len(batch.inputs) + len(inputs) > self._max:
                batch.full.set()  # no room: its leader calls now, and this job starts the next
                del self._open[key]
                batch = None
            leader = batch is None
            if batch is None:
                batch = self._open[key] = _Batch(turn=turn)
            start = len(batch.inputs)
            batch.inputs.extend(inputs)
            batch.jobs += 1
            batch.turn = batch.turn.with_job(turn)
            woken = None if leader else threading.Event()
            if woken is not None:
                batch.waiters.append(woken)
            if len(batch.inputs) >= self._max:
                batch.full.set()
                self._open.pop(key, None)
        if woken is None:
            self._lead(key, batch, options, cancel)
        else:
            _follow(batch, woken, cancel)
        if cancel is not None and cancel.is_set():
            raise Cancelled
        if isinstance(batch.error, ModelServerRejected) and batch.jobs > 1:
            # Refused for one input's sake, maybe not this job's: each job asks alone,
            # and only the one at fault fails.
            return Coalesced(self._alone(inputs, options, turn, cancel), len(inputs))
        if batch.error is not None:
            raise batch.error
        assert batch.answer is not None
        return Coalesced(_share(batch, start, len(inputs)), len(batch.inputs))

    def _alone(self, inputs: Inputs, options: dict[str, Any], turn: Turn, cancel: Cancel | None) -> Embedded:
        with self._calls:
            return self._call(inputs, options, turn, cancel)

    def _lead(self, key: str, batch: _Batch, options: dict[str, Any], cancel: Cancel | None) -> None:
        batch.full.wait(self._wait)
        self._calls.acquire()  # the call stays open to more jobs meanwhile
        with self._lock:
            if self._open.get(key) is batch:
                del self._open[key]  # closed: later jobs start another call
            inputs = list(batch.inputs)
            alone = batch.jobs == 1
            turn = batch.turn
        try:
            batch.answer = self._call(inputs, options, turn, cancel if alone else None)
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
    if answer.usage is None:
        return Embedded(vectors, None, answer.model, answer.served_by)
    total = int(answer.usage.get("prompt_tokens") or 0)
    mine = total if batch.jobs == 1 else shares(total, [_size(item) for item in batch.inputs], start, count)
    return Embedded(vectors, {"prompt_tokens": mine, "total_tokens": mine}, answer.model, answer.served_by)


def shares(total: int, sizes: list[int], start: int, count: int) -> int:
    """The tokens of inputs ``start .. start+count`` of a call of `total` tokens whose
    inputs are of `sizes`: `total` split by size (largest remainders), so that the
    shares of the call's jobs add up to it exactly."""
    whole = sum(sizes) or 1
    floors = [total * size // whole for size in sizes]
    left = total - sum(floors)
    # The `left` inputs with the largest remainders get one more (the earliest first).
    order = sorted(range(len(sizes)), key=lambda n: (-(total * sizes[n] % whole), n))
    extra = set(order[:left])
    return sum(floors[n] + (1 if n in extra else 0) for n in range(start, start + count))


def _size(item: Any) -> int:
    return max(1, len(item))
