"""A job on a model with several servers: a slot taken, failing over, falling back.

`PooledModel.chat` takes a slot of one of the model's servers (servers.py) and calls
that server once (`PooledModel.embeddings` makes an embeddings call the same way).
When the call fails for the server's sake (refused, reset, timed out, a 5xx), the
slot goes back marked failed and the job runs on another healthy
server: that costs none of the job's own retries (`LLM_MAX_RETRIES`), which are
spent only when no other server is left to try, with the usual backoff. Once pieces
of a streamed answer were passed on, the job is not run again (they would be sent
twice). While no server of the model is up the job waits, within its deadline
(`LLM_DEADLINE`); when the model names fallbacks, a job that waited so for
`fallback_after` seconds (or, opted in, `queue_fallback_after` seconds in all since
it was accepted) runs on the first fallback model with a free slot. The answer says
which model and server served it.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

from shared.config import Config
from shared.contract import (
    DEFAULT_PRIORITY,
    ModelServerError,
    ModelServerFailed,
    ModelServerRejected,
    ModelServerTimeout,
    ModelServerUnavailable,
)
from shared.registry import Model, Registry, Server
from shared.servers import PRIORITY_STEP
from shared.storage import redis_clients
from shared.telemetry import tracing
from tasks.model.cancel import Cancel, Cancelled
from tasks.model.client import ModelClient
from tasks.model.protocol import ChatRequest, Completion, Embedded, Turn
from tasks.model.servers import WAIT_STEP, ServerPool, Slot, prefix_hash
from tasks.model.stream import OnDelta

log = logging.getLogger(__name__)

SERVER_FAULTS = (ModelServerUnavailable, ModelServerFailed, ModelServerTimeout)
_Answer = TypeVar("_Answer")
REDIS_WAIT = 0.25  # seconds between looks for a slot while Redis is away


class PooledModel:
    """Runs jobs of one model on its servers' free slots."""

    def __init__(
        self,
        config: Config,
        registry: Registry,
        model: Model,
        pools: Callable[[Model], ServerPool],
        clients: Callable[[Model, Server], ModelClient],
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._config = config
        self._registry = registry
        self.model = model
        self._pools = pools
        self._clients = clients
        self._sleep = sleep

    def chat(self, request: ChatRequest, cancel: Cancel | None = None, on_delta: OnDelta | None = None) -> Completion:
        relayed = False

        def relay(index: int, text: str, extra: dict | None) -> None:  # type: ignore[type-arg]
            nonlocal relayed
            relayed = True
            assert on_delta is not None
            on_delta(index, text, extra)

        def call(slot: Slot, give_up_at: float) -> Completion:
            return self._call(slot, request, cancel, relay if on_delta else None, give_up_at)

        prefix = None
        if not request.raw:
            prefix = prefix_hash(request.messages, self._config.prefix_affinity_chars)
        turn = Turn(request.priority, request.accepted_at, request.tenant, request.weight)
        # Once pieces of a streamed answer were passed on, it is not run again (they would be sent twice).
        completion, slot, waited = self._on_servers(call, turn, request.fallbacks, cancel, prefix, lambda: not relayed)
        completion.served_by = (slot.model.name, slot.server.name)
        completion.slot_wait = waited
        return completion

    def embeddings(
        self, inputs: list[str] | list[list[int]], options: dict[str, Any], turn: Turn, cancel: Cancel | None = None
    ) -> Embedded:
        """An embeddings call on a slot of one of the model's servers (or a fallback's), as
        a chat job runs: it waits for one within LLM_DEADLINE, fails over, falls back."""

        def call(slot: Slot, give_up_at: float) -> Embedded:
            asked = options
            if slot.model is not self.model:
                asked = {**options, "model": slot.model.served_name or slot.model.name}
            if tracing.enabled():
                tracing.annotate(server=slot.server.name, served_model=slot.model.name)
            return self._clients(slot.model, slot.server).embeddings(inputs, asked, give_up_at=give_up_at)

        embedded, slot, _ = self._on_servers(call, turn, None, cancel, None, lambda: True)
        embedded.served_by = (slot.model.name, slot.server.name)
        return embedded

    def _on_servers(
        self,
        call: Callable[[Slot, float], _Answer],
        turn: Turn,
        fallbacks: list[str] | None,
        cancel: Cancel | None,
        prefix: str | None,
        may_run_again: Callable[[], bool],
    ) -> tuple[_Answer, Slot, float]:
        """`call(slot, give_up_at)` on a slot taken for it, once it is answered: another
        server tried when one fails, the job's retries spent when none is left. Gives the
        answer, the slot it came from, and the seconds spent waiting for slots."""
        started = time.monotonic()
        give_up_at = started + self._config.llm_deadline
        tried: frozenset[str] = frozenset()
        attempt = 0
        waited = 0.0
        while True:
            looked = time.monotonic()
            try:
                slot = self._take(turn, fallbacks, cancel, give_up_at, tried, prefix)
            except redis_clients.UNREACHABLE as exc:
                # The servers' slots are in Redis: while it is away (restarting), the job
                # waits for it, within its deadline, as for a slot.
                waited += time.monotonic() - looked
                if time.monotonic() + REDIS_WAIT >= give_up_at:
                    raise ModelServerUnavailable(
                        f"model {self.model.name}'s servers' slots (Redis) unreachable"
                    ) from exc
                log.warning("the slots of model %s cannot be read (%s): waiting for Redis", self.model.name, exc)
                self._sleep(REDIS_WAIT)
                continue
            waited += time.monotonic() - looked
            outcome, why, took = "none", "", None
            called = time.monotonic()
            try:
                answer = call(slot, give_up_at)
                outcome, took = "ok", time.monotonic() - called
            except SERVER_FAULTS as error:
                if cancel is not None and cancel.is_set():
                    raise Cancelled from None
                outcome = "down" if _refused(error) else "fail"
                why = error.message
                failure = error
            except ModelServerRejected:
                outcome = "ok"  # the server answered: the request is at fault (and its time tells no speed)
                raise
            finally:
                if slot.hold:
                    self._pools(slot.model).release(slot, outcome, why, took)
            if outcome == "ok":
                return answer, slot, waited
            log.warning(
                "model server %s of %s failed job's call: %s", slot.server.name, slot.model.name, why,
                extra={"server": slot.server.name, "model": slot.model.name},
            )  # fmt: skip
            if not may_run_again():
                raise failure
            tried = tried | {slot.server.name}
            if slot.model is self.model and self._pools(self.model).healthy_besides(tried):
                continue  # another server: none of the job's own retries spent
            delay = random.uniform(0, self._config.llm_retry_backoff * 2**attempt)
            if attempt >= self._config.llm_max_retries or time.monotonic() + delay >= give_up_at:
                spent = time.monotonic() - started
                message = f"{why} (gave up after {attempt + 1} round(s) of the model's servers in {spent:.1f}s)"
                raise type(failure)(message, failure.status_code) from None
            self._sleep(delay)
            attempt += 1
            tried = frozenset()

    def served_models(self) -> list[str]:
        """The model ids the first of its servers that answers lists at /v1/models."""
        failure: ModelServerError | None = None
        for server in self.model.servers:
            try:
                return self._clients(self.model, server).served_models()
            except ModelServerError as exc:
                failure = exc
        assert failure is not None
        raise failure

    def _call(
        self, slot: Slot, request: ChatRequest, cancel: Cancel | None, on_delta: OnDelta | None, give_up_at: float
    ) -> Completion:
        if slot.model is not self.model:
            request = replace(request, model=slot.model.served_name or slot.model.name)
        if tracing.enabled():
            tracing.annotate(server=slot.server.name, served_model=slot.model.name,
                             affinity_hit=slot.affinity_hit)  # fmt: skip
        return self._clients(slot.model, slot.server).chat(request, cancel, on_delta, give_up_at=give_up_at)

    def _take(
        self,
        turn: Turn,
        fallbacks: list[str] | None,
        cancel: Cancel | None,
        give_up_at: float,
        tried: frozenset[str],
        prefix: str | None,
    ) -> Slot:
        """A slot of this model's servers, or of a fallback's; waits in line for one."""
        pool = self._pools(self.model)
        waiter = uuid.uuid4().hex
        priority = DEFAULT_PRIORITY if turn.priority is None else turn.priority
        accepted = turn.accepted_at if turn.accepted_at is not None else time.time()
        score = (9 - priority) * PRIORITY_STEP + int(accepted * 1000)
        waker = pool.waker(waiter)
        if cancel is not None:
            cancel.attach(waker)
        in_line = True  # a slot taken takes the waiter out of the line (SERVER_TAKE)
        try:
            while True:
                if cancel is not None and cancel.is_set():
                    raise Cancelled
                slot, down_since = pool.try_take(waiter, score, tried, prefix, turn.tenant, turn.weight)
                if slot is not None:
                    in_line = False
                    return slot
                now = time.monotonic()
                if now >= give_up_at:
                    raise ModelServerUnavailable(
                        f"no server of model {self.model.name} took the job within its deadline"
                        f" ({self._config.llm_deadline:g}s)"
                    )
                fallback = self._fallback(fallbacks, down_since, accepted, score, turn)
                if fallback is not None:
                    return fallback
                if tried and not pool.healthy_besides(tried):
                    # The servers it has not tried went down, and one it failed on may be
                    # up again: any healthy server may take it now (else it would wait
                    # for those alone, until its deadline).
                    tried = frozenset()
                    continue
                pool.wait(waiter, min(WAIT_STEP, give_up_at - now))
        finally:
            if cancel is not None:
                cancel.attach(None)
            if in_line:
                # A waiter not forgotten (Redis away) leaves the line as it stops beating.
                with contextlib.suppress(*redis_clients.UNREACHABLE):
                    pool.forget(waiter, turn.tenant)

    def _fallback(
        self, fallbacks: list[str] | None, down_since: float | None, accepted: float, score: float, turn: Turn
    ) -> Slot | None:
        names = self.model.fallbacks if fallbacks is None else tuple(fallbacks)
        if not names:
            return None
        now = time.time()
        no_server = down_since is not None and now - down_since >= self.model.fallback_after
        bound = self.model.queue_fallback_after
        waited = bound is not None and now - accepted >= bound
        if not (no_server or waited):
            return None
        for name in names:
            model = self._registry.route(name)
            if model is self.model:
                continue
            if not model.pooled:
                slot = Slot(model, model.servers[0], "")
            else:
                waiter = uuid.uuid4().hex
                slot, _ = self._pools(model).try_take(waiter, score, tenant=turn.tenant, weight=turn.weight)
                if slot is None:
                    self._pools(model).forget(waiter, turn.tenant)  # not to wait in its line
                    continue
            log.warning(
                "job runs on fallback model %s: %s", model.name,
                "no server of its model is up" if no_server else "it waited too long for a slot",
                extra={"model": self.model.name, "served_model": model.name},
            )  # fmt: skip
            return slot
        return None


def _refused(error: ModelServerError) -> bool:
    return isinstance(error, ModelServerUnavailable) and "refused" in error.message.lower()
