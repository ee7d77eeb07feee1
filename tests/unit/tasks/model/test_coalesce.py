"""Embedding jobs' calls joined: which jobs share a call (never two tenants'), each gets
its own vectors and tokens, a failure is every job's unless the server refused one
input (then only its job's), a cancel is one job's."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from shared.contract import ModelServerFailed, ModelServerRejected
from tasks.model.cancel import Cancel, Cancelled
from tasks.model.coalesce import Coalescer, shares
from tasks.model.protocol import Embedded, Turn

pytestmark = pytest.mark.unit


class Server:
    """A model server's call as the coalescer sees it: records each call's inputs; a
    call can be held until released."""

    def __init__(self) -> None:
        self.calls: list[list[Any]] = []
        self.release = threading.Event()
        self.release.set()
        self.entered = threading.Event()
        self.fail: Exception | None = None
        self.too_long: int | None = None  # an input longer than this: the call is refused (400)
        self.turns: list[Turn] = []

    def __call__(self, inputs: list[Any], options: dict[str, Any], turn: Turn, cancel: Cancel | None) -> Embedded:
        self.calls.append(list(inputs))
        self.turns.append(turn)
        self.entered.set()
        self.release.wait(10)
        if self.fail is not None:
            raise self.fail
        long = [item for item in inputs if self.too_long is not None and len(str(item)) > self.too_long]
        if long:
            raise ModelServerRejected(f"input of {len(str(long[0]))} characters is too long", 400)
        vectors = [[float(len(str(item))), float(hash(str(item)) % 1000)] for item in inputs]
        return Embedded(vectors, {"prompt_tokens": sum(len(str(i)) for i in inputs)}, "m")


def test_jobs_arriving_together_share_a_call_and_each_gets_its_own_vectors() -> None:
    server = Server()
    server.release.clear()  # the first call is held: the others gather behind it
    coalescer = Coalescer(server, wait=0.05, max_inputs=100)
    texts = [[f"text {n}"] for n in range(12)]
    with ThreadPoolExecutor(12) as pool:
        first = pool.submit(coalescer.embed, texts[0], {})
        server.entered.wait(5)  # the first job's call is made: the next 11 wait together
        rest = [pool.submit(coalescer.embed, text, {}) for text in texts[1:]]
        server.release.set()
        answers = [first.result(10)] + [future.result(10) for future in rest]
    assert server.calls[0] == ["text 0"]
    assert sum(len(call) for call in server.calls) == 12  # every input sent once
    assert len(server.calls) < 12  # joined
    for text, answer in zip(texts, answers, strict=True):
        assert answer.embedded.vectors == [[float(len(text[0])), float(hash(text[0]) % 1000)]]
    # The call's tokens shared by the inputs' lengths: they add up to the call's.
    assert sum(a.embedded.usage["prompt_tokens"] for a in answers[1:]) == sum(len(t[0]) for t in texts[1:])


def test_a_full_call_goes_at_once_and_different_options_never_share() -> None:
    server = Server()
    coalescer = Coalescer(server, wait=5.0, max_inputs=4)  # a wait only a full call cuts short
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(coalescer.embed, ["a", "b"], {"dimensions": 8}) for _ in range(2)]
        big = pool.submit(coalescer.embed, ["x"] * 4, {"dimensions": 8})  # its own call: full alone
        assert all(f.result(3).call_inputs == 4 for f in futures)  # 2 + 2: full, sent without waiting
        assert big.result(3).call_inputs == 4
    assert sorted(map(len, server.calls)) == [4, 4]
    coalescer = Coalescer(server, wait=0.2, max_inputs=4)
    options = [threading.Thread(target=coalescer.embed, args=(["t"], {"dimensions": d})) for d in (8, 16)]
    for thread in options:
        thread.start()
    for thread in options:
        thread.join(10)
    assert server.calls[-2:] == [["t"], ["t"]]  # one call each


def test_texts_and_token_ids_never_share_a_call() -> None:
    server = Server()
    coalescer = Coalescer(server, wait=0.2, max_inputs=100)
    with ThreadPoolExecutor(2) as pool:
        texts = pool.submit(coalescer.embed, ["a"], {})
        tokens = pool.submit(coalescer.embed, [[1, 2]], {})
        texts.result(5), tokens.result(5)
    assert sorted(map(repr, server.calls)) == ["['a']", "[[1, 2]]"]


def test_a_failed_call_fails_each_job_of_it() -> None:
    server = Server()
    server.fail = ModelServerFailed("model server answered 500: boom", 500)
    coalescer = Coalescer(server, wait=0.1, max_inputs=100)
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(coalescer.embed, [f"t{n}"], {}) for n in range(3)]
        for future in futures:
            with pytest.raises(ModelServerFailed, match="boom"):
                future.result(5)
    assert len(server.calls) == 1


def test_a_cancelled_job_stops_waiting_and_the_call_goes_on_for_the_others() -> None:
    server = Server()
    server.release.clear()
    coalescer = Coalescer(server, wait=0.05, max_inputs=100)
    cancel = Cancel()
    with ThreadPoolExecutor(3) as pool:
        leader = pool.submit(coalescer.embed, ["lead"], {})
        server.entered.wait(5)
        server.entered.clear()
        leader_released = server.release
        follower = pool.submit(coalescer.embed, ["stays"], {})
        doomed = pool.submit(coalescer.embed, ["goes"], {}, None, cancel)
        # The two wait for the next call, held by its leader's wait: cancel one.
        server.release = threading.Event()
        leader_released.set()
        server.entered.wait(5)  # the second call (both inputs) is made
        cancel.set()
        with pytest.raises(Cancelled):
            doomed.result(5)  # at once, while the call is still held
        server.release.set()
        assert follower.result(5).embedded.vectors == [[5.0, float(hash("stays") % 1000)]]
        leader.result(5)
    assert sorted(server.calls[1]) == ["goes", "stays"]  # the call carried it all the same


def test_two_tenants_jobs_never_share_a_call_one_tenants_do() -> None:
    server = Server()
    coalescer = Coalescer(server, wait=0.2, max_inputs=100)
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(coalescer.embed, [f"{who} {n}"], {}, who) for who in ("alpha", "beta") for n in (1, 2)]
        for future in futures:
            future.result(5)
    assert sorted(sorted(call) for call in server.calls) == [["alpha 1", "alpha 2"], ["beta 1", "beta 2"]]


def test_a_call_refused_for_one_input_fails_only_that_job_with_its_own_error() -> None:
    server = Server()
    server.too_long = 10
    coalescer = Coalescer(server, wait=0.2, max_inputs=100)
    with ThreadPoolExecutor(3) as pool:
        good = [pool.submit(coalescer.embed, [f"short {n}"], {}, "t") for n in range(2)]
        bad = pool.submit(coalescer.embed, ["x" * 30], {}, "t")
        for n, future in enumerate(good):
            answer = future.result(5).embedded
            assert answer.vectors == [[7.0, float(hash(f"short {n}") % 1000)]]
            assert answer.usage is not None and answer.usage["prompt_tokens"] == 7  # its own call's: exact
        with pytest.raises(ModelServerRejected, match="30 characters"):
            bad.result(5)
    assert len(server.calls[0]) == 3 and sorted(map(len, server.calls[1:])) == [1, 1, 1]


def test_a_calls_tokens_are_shared_exactly_and_its_place_is_its_most_urgent_jobs() -> None:
    # Three inputs of equal size share 10 tokens 4, 3, 3: always the call's total.
    assert [shares(10, [5, 5, 5], n, 1) for n in range(3)] == [4, 3, 3]
    assert shares(7, [1, 6], 0, 1) == 1 and shares(7, [1, 6], 1, 1) == 6
    server = Server()
    coalescer = Coalescer(server, wait=0.2, max_inputs=100)
    with ThreadPoolExecutor(2) as pool:
        low = pool.submit(coalescer.embed, ["a"], {}, "t", None, Turn(2, 100.0))
        high = pool.submit(coalescer.embed, ["bb"], {}, "t", None, Turn(8, 200.0))
        used = low.result(5).embedded.usage["prompt_tokens"] + high.result(5).embedded.usage["prompt_tokens"]
    assert server.calls == [["a", "bb"]] and used == 3
    assert server.turns == [Turn(8, 100.0)]
