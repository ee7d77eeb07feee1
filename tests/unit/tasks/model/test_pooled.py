"""A job on a model with several servers: which server it runs on after a failure, when it
spends its own retries, when it must not run again, and when it falls back.

The edges are faked: each model server is a transport (testing/model_transport.py),
and Redis answers the pool's scripts as the contract says they do (a slot of the first
healthy server not excluded, a server gone down on a refused connection); the scripts
themselves run on a real Redis in tests/integration/tasks/test_servers.py."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from shared.config import Config
from shared.contract import ModelServerFailed, ModelServerRejected, ModelServerUnavailable
from shared.registry import Model, Server, load_registry
from tasks.model.cancel import Cancel, Cancelled
from tasks.model.client import ModelClient
from tasks.model.pooled import REDIS_WAIT, PooledModel
from tasks.model.protocol import ChatRequest, Turn
from tasks.model.servers import ServerPool
from testing.model_transport import ModelTransport, error, streamed
from testing.scripted_redis import AWAY, Call, ScriptedRedis

pytestmark = pytest.mark.unit

MODELS = [
    {
        "name": "m",
        "served_name": "m-served",
        "servers": [{"url": "a:1", "name": "a", "slots": 1}, {"url": "b:1", "name": "b", "slots": 1}],
        "fallbacks": ["small"],
        "fallback_after": 5,
    },
    {"name": "small", "url": "c:1", "served_name": "small-served"},
]


class Pool:
    """The model's servers as Redis keeps them, and what was asked of it."""

    def __init__(self, **settings: Any) -> None:
        self.config = Config(_env_file=None, models=json.dumps({"models": MODELS}), **settings)  # type: ignore[call-arg]
        self.registry = load_registry(self.config)
        self.model = self.registry.by_name("m")
        self.state = {"a": "up", "b": "up"}
        self.down_since: float | None = None  # seconds, when no server is up
        self.held: dict[str, str] = {}  # hold -> server
        self.released: list[tuple[str, str]] = []  # (server, outcome)
        self.redis = ScriptedRedis({"SERVER_TAKE": self._take, "SERVER_RELEASE": self._release, "hmget": self._states})
        self.models = {"a": ModelTransport(), "b": ModelTransport(), "c:1": ModelTransport()}
        self.slept: list[float] = []
        self.pools: dict[str, ServerPool] = {}

    def _take(self, call: Call) -> list[Any]:
        excluded = call.argv[7]
        for name in ("a", "b"):
            if self.state[name] == "up" and f",{name}," not in excluded:
                self.held[call.argv[4]] = name
                return [1, name.encode(), 0]
        return [0, str(int(self.down_since * 1000) if self.down_since else 0).encode()]

    def _release(self, call: Call) -> list[Any]:
        server, outcome = self.held.pop(call.argv[0]), call.argv[1]
        self.released.append((server, outcome))
        if outcome == "down":
            self.state[server] = "down"
        return [1, server.encode(), b"down" if outcome == "down" else b"", b""]

    def _states(self, call: Call) -> list[bytes]:
        return [self.state[field.split("|")[0]].encode() for field in call.args[1]]

    def pool(self, model: Model) -> ServerPool:
        if model.name not in self.pools:
            self.pools[model.name] = ServerPool(self.config, self.redis, model, "host:1")  # type: ignore[arg-type]
        return self.pools[model.name]

    def client(self, model: Model, server: Server) -> ModelClient:
        # As the worker makes a pooled model's server's client: one attempt a call.
        update = {"inner_llm_url": server.url, "default_model": model.served_name, "llm_max_retries": 0}
        return ModelClient(self.config.model_copy(update=update), transport=self.models[server.name])

    def pooled(self) -> PooledModel:
        return PooledModel(self.config, self.registry, self.model, self.pool, self.client, self.slept.append)


def ask(**fields: Any) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": "hi"}], **{"fallbacks": [], **fields})


def test_a_server_that_refuses_is_left_at_once_for_another_without_spending_the_jobs_retries() -> None:
    pool = Pool()
    pool.models["a"].answers = [ConnectionRefusedError("[Errno 111] Connection refused")]
    completion = pool.pooled().chat(ask())
    assert completion.content == "ok" and completion.served_by == ("m", "b")
    assert pool.released == [("a", "down"), ("b", "ok")] and pool.slept == []
    assert pool.models["b"].posts[0]["body"]["model"] == "m-served"


def test_a_server_that_fails_is_counted_failed_not_down_and_the_job_runs_on_another() -> None:
    pool = Pool()
    pool.models["a"].answers = [error(500, "oops")]
    assert pool.pooled().chat(ask()).served_by == ("m", "b")
    assert pool.released == [("a", "fail"), ("b", "ok")] and pool.state["a"] == "up"


def test_a_rejected_request_is_the_callers_fault_and_is_not_tried_elsewhere() -> None:
    pool = Pool()
    pool.models["a"].answers = [error(400, "top_p must be in (0, 1]")]
    with pytest.raises(ModelServerRejected, match="top_p"):
        pool.pooled().chat(ask())
    assert pool.released == [("a", "ok")] and pool.models["b"].sent == []


def test_a_streamed_answer_whose_pieces_were_passed_on_is_not_run_again() -> None:
    pool = Pool()
    pool.models["a"].answers = [streamed("Hel", "lo", finish=None)]
    relayed: list[str] = []
    with pytest.raises(ModelServerFailed, match="ended before it was complete"):
        pool.pooled().chat(ask(), on_delta=lambda index, text, extra: relayed.append(text))
    assert relayed == ["Hel", "lo"] and pool.models["b"].sent == []
    assert pool.released == [("a", "fail")]


def test_when_every_server_failed_the_job_spends_its_retries_then_says_how_many_rounds() -> None:
    pool = Pool(llm_max_retries=1, llm_retry_backoff=0.01)
    for name in ("a", "b"):
        pool.models[name].answers = [error(502, "bad gateway"), error(502, "bad gateway")]
    with pytest.raises(ModelServerFailed, match=r"bad gateway \(gave up after 2 round\(s\) of the model's servers"):
        pool.pooled().chat(ask())
    assert pool.released == [("a", "fail"), ("b", "fail")] * 2
    assert len(pool.slept) == 1 and 0 <= pool.slept[0] <= 0.01  # one backoff, between the rounds


def test_a_job_falls_back_when_no_server_of_its_model_has_been_up_for_a_while() -> None:
    pool = Pool()
    pool.state = {"a": "down", "b": "down"}
    pool.down_since = time.time() - 60
    completion = pool.pooled().chat(ask(fallbacks=None, model="m-served"))  # the model's own fallbacks
    assert completion.served_by == ("small", "c:1")
    assert pool.models["c:1"].posts[0]["body"]["model"] == "small-served"
    waiting = pool.config.keys.server_waiting("m")
    assert any(call.name == "zrem" and call.args[0] == waiting for call in pool.redis.calls)  # left m's line


def test_a_job_does_not_fall_back_while_its_model_was_down_only_briefly_or_it_opted_out() -> None:
    pool = Pool(llm_deadline=0.05)
    pool.state = {"a": "down", "b": "down"}
    pool.down_since = time.time() - 1  # fallback_after is 5 s
    with pytest.raises(ModelServerUnavailable, match=r"no server of model m took the job within its deadline"):
        pool.pooled().chat(ask(fallbacks=None))
    pool.down_since = time.time() - 60
    with pytest.raises(ModelServerUnavailable):
        pool.pooled().chat(ask(fallbacks=[]))
    assert pool.models["c:1"].sent == []


def test_a_cancelled_job_leaves_the_line_without_a_call() -> None:
    pool = Pool()
    cancel = Cancel()
    cancel.set()
    with pytest.raises(Cancelled):
        pool.pooled().chat(ask(), cancel)
    assert pool.models["a"].sent == [] and pool.models["b"].sent == []
    # Its wait's wake-up list is pushed (the cancel), and it leaves every line it joined.
    assert [call.name for call in pool.redis.calls] == ["rpush", "pexpire", "zrem", "zrem", "hdel", "delete"]


def test_a_redis_away_is_waited_for_within_the_jobs_deadline() -> None:
    pool = Pool()
    answers = iter([AWAY, AWAY])

    def take(call: Call) -> list[Any]:
        failure = next(answers, None)
        if failure is not None:
            raise failure
        return pool._take(call)

    pool.redis.answers["SERVER_TAKE"] = take
    assert pool.pooled().chat(ask()).served_by == ("m", "a")
    assert pool.slept == [REDIS_WAIT, REDIS_WAIT]
    gone = Pool(llm_deadline=0.1)
    gone.redis.answers["SERVER_TAKE"] = AWAY
    with pytest.raises(ModelServerUnavailable, match=r"slots \(Redis\) unreachable"):
        gone.pooled().chat(ask())


def test_a_jobs_place_in_line_is_its_priority_then_its_age() -> None:
    pool = Pool()
    model = pool.pooled()
    model.chat(ask(priority=9, accepted_at=1000.0))
    model.chat(ask(priority=0, accepted_at=1.0))
    urgent, batch = (call.argv[3] for call in pool.redis.named("SERVER_TAKE"))
    assert urgent < batch  # a lower score is nearer the front
    pool.models["a"].answers = [httpx.Response(200, json={"data": [{"index": 0, "embedding": [1.0]}]})]
    model.embeddings(["x"], {}, Turn(priority=9, accepted_at=999.0))
    assert pool.redis.named("SERVER_TAKE")[-1].argv[3] < urgent


def test_embeddings_run_on_a_slot_and_ask_a_fallback_by_its_own_name() -> None:
    pool = Pool()
    vectors = {"data": [{"index": 0, "embedding": [1.0]}], "model": "x"}
    pool.models["a"].answers = [httpx.Response(200, json=vectors)]
    embedded = pool.pooled().embeddings(["hi"], {"dimensions": 1}, Turn())
    assert embedded.served_by == ("m", "a") and embedded.vectors == [[1.0]]
    assert pool.models["a"].posts[0]["body"]["model"] == "m-served"
    pool.state = {"a": "down", "b": "down"}
    pool.down_since = time.time() - 60
    pool.models["c:1"].answers = [httpx.Response(200, json=vectors)]
    assert pool.pooled().embeddings(["hi"], {"model": "m"}, Turn()).served_by == ("small", "c:1")
    assert pool.models["c:1"].posts[0]["body"]["model"] == "small-served"


def test_the_models_served_are_listed_by_the_first_server_that_answers() -> None:
    pool = Pool()
    pool.models["a"].answers = [ConnectionRefusedError("refused")]
    pool.models["b"].models = ["m-served", "other"]
    assert pool.pooled().served_models() == ["m-served", "other"]


def test_embeddings_fall_back_only_to_the_fallbacks_the_job_may_use() -> None:
    pool = Pool(llm_deadline=0.05)
    pool.state = {"a": "down", "b": "down"}
    pool.down_since = time.time() - 60
    # Its project may not use "small", m's fallback: none left, it waits for m alone.
    with pytest.raises(ModelServerUnavailable):
        pool.pooled().embeddings(["hi"], {}, Turn(), None, [])
    assert pool.models["c:1"].sent == []
