"""A worker's side of a model's server pool: what it asks Redis's scripts to take and give
back, what it makes of their answers, the holds it renews and the servers it probes.
Redis is scripted (testing/scripted_redis.py); the scripts themselves run on a real
Redis in tests/integration/tasks/test_servers.py."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import redis

from shared.config import Config
from shared.registry import Model, load_registry
from tasks.model import servers
from tasks.model.servers import PoolKeeper, ServerPool, Slot, Waker, prefix_hash
from testing.scripted_redis import AWAY, Call, ScriptedRedis, arity

pytestmark = pytest.mark.unit


def config(**settings: Any) -> Config:
    models = [{"name": "m", "servers": [{"url": "a:1", "slots": 2, "name": "a"}, {"url": "b:1", "slots": 1,
                                                                                   "name": "b"}]}]  # fmt: skip
    return Config(_env_file=None, models=json.dumps({"models": models}), redis_prefix="p", **settings)  # type: ignore[call-arg]


def pool(answers: dict[str, Any] | None = None, **settings: Any) -> tuple[ServerPool, ScriptedRedis, Model]:
    conf = config(**settings)
    model = load_registry(conf).default
    fake = ScriptedRedis(answers)
    return ServerPool(conf, fake, model, "host:1"), fake, model  # type: ignore[arg-type]


def test_a_conversations_prefix_is_hashed_when_long_enough_whatever_its_last_message() -> None:
    system = {"role": "system", "content": "You are terse. " * 20}
    one = prefix_hash([system, {"role": "user", "content": "first"}], 100)
    assert one is not None and one == prefix_hash([system, {"role": "user", "content": "second"}], 100)
    assert one == prefix_hash([{"content": system["content"], "role": "system"}, {"role": "user"}], 100)
    assert one != prefix_hash([{**system, "content": "other " * 50}, {"role": "user"}], 100)
    assert prefix_hash([system], 100) is None  # no prefix: the message alone
    assert prefix_hash([{"role": "system", "content": "short"}, {"role": "user"}], 100) is None
    assert prefix_hash(None, 0) is None


def test_a_slot_taken_names_its_server_and_its_hold_is_renewed_until_given_back() -> None:
    answers = {"SERVER_TAKE": [1, b"b", 1], "SERVER_RELEASE": [1, b"b", b"", b""], "SERVER_RECLAIM": 0}
    taken, fake, _ = pool({**answers, "SERVER_PROBES": []})
    slot, down_since = taken.try_take("w1", 5e13, frozenset({"a"}), "f" * 32, "acme", 2.0)
    assert slot is not None and down_since is None
    assert (slot.server.name, slot.affinity_hit) == ("b", True)
    (call,) = fake.named("SERVER_TAKE")
    assert (len(call.keys), len(call.argv)) == arity("SERVER_TAKE")
    keys = config().keys
    assert call.keys[4] == keys.affinity("m", "acme", "f" * 32)  # the tenant's own affinity
    assert call.argv[1] == "a=2,b=1" and call.argv[2] == "w1" and call.argv[4] == slot.hold
    assert call.argv[7] == ",a," and call.argv[8] == 600 and call.argv[11:] == ["acme", 2.0]
    taken.keep(lambda server: None)
    (renew,) = fake.named("SERVER_RENEW")
    assert renew.argv[1:] == [slot.hold]
    taken.release(slot, "ok", seconds=0.25)
    taken.keep(lambda server: None)
    assert len(fake.named("SERVER_RENEW")) == 1  # given back: no longer renewed


def test_without_a_prefix_or_affinity_no_server_is_remembered() -> None:
    taken, fake, _ = pool({"SERVER_TAKE": [1, b"a", 0]})
    taken.try_take("w1", 1.0)
    (call,) = fake.named("SERVER_TAKE")
    assert call.keys[4] == call.keys[0] and call.argv[7] == "," and call.argv[8] == 0


def test_no_slot_tells_since_when_no_server_is_up_and_keeps_no_hold() -> None:
    answers: dict[str, Any] = {"SERVER_TAKE": [0, b"1700000000500"], "SERVER_RECLAIM": 0, "SERVER_PROBES": []}
    taken, fake, _ = pool(answers)
    assert taken.try_take("w1", 1.0) == (None, 1700000000.5)
    fake.answers["SERVER_TAKE"] = [0, b"0"]
    assert taken.try_take("w1", 1.0) == (None, None)  # a server is up: the job waits in line
    fake.answers["SERVER_TAKE"] = AWAY
    with pytest.raises(redis.ConnectionError):
        taken.try_take("w1", 1.0)
    taken.keep(lambda server: None)
    assert fake.named("SERVER_RENEW") == []


def test_a_slot_given_back_says_how_its_call_went_and_a_server_gone_down_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    given, fake, model = pool({"SERVER_RELEASE": [1, b"a", b"down", b"last"]}, server_failures=3)
    slot = Slot(model, model.server("a"), "hold-1")
    with caplog.at_level(logging.WARNING, logger=servers.__name__):
        given.release(slot, "down", "x" * 400, None)
    (call,) = fake.named("SERVER_RELEASE")
    assert (len(call.keys), len(call.argv)) == arity("SERVER_RELEASE")
    assert call.argv[:2] == ["hold-1", "down"] and call.argv[3] == 3
    assert call.argv[6] == "x" * 300 and call.argv[7] == "a=2,b=1" and call.argv[8] == ""
    said = [(record.levelname, record.getMessage()) for record in caplog.records]
    assert said[0][0] == "WARNING" and "model server a of m is down" in said[0][1]
    assert said[1] == ("ERROR", "no server of model m is up: its jobs wait for one")
    given.release(slot, "ok", seconds=0.1234)
    assert fake.named("SERVER_RELEASE")[1].argv[8] == 123.4  # milliseconds: the server's speed


def test_a_release_that_cannot_reach_redis_never_fails_the_job(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(servers, "RELEASE_PATIENCE", 0.0)
    given, fake, model = pool()
    fake.away = AWAY
    given.release(Slot(model, model.server("a"), "hold-1"), "ok")
    assert "comes back within JOB_LEASE" in caplog.text


def test_only_a_server_up_and_not_tried_counts_as_healthy() -> None:
    checked, _, _ = pool({"hmget": [b"up", b"down"]})
    assert checked.healthy_besides(frozenset())
    assert checked.healthy_besides(frozenset({"b"}))
    assert not checked.healthy_besides(frozenset({"a"}))
    unknown, _, _ = pool({"hmget": [None, None]})  # Redis emptied: nothing known yet
    assert not unknown.healthy_besides(frozenset())


def test_a_down_server_whose_probe_is_due_is_probed_and_up_again_only_when_it_answers() -> None:
    kept, fake, _ = pool({"SERVER_RECLAIM": 2, "SERVER_PROBES": [b"a", b"b"], "SERVER_RECOVERED": 1})
    probed: list[str] = []

    def probe(server: Any) -> str | None:
        probed.append(server.name)
        return None if server.name == "b" else "refused"

    kept.keep(probe)
    assert probed == ["a", "b"]
    (recovered,) = fake.named("SERVER_RECOVERED")
    assert recovered.argv[0] == "b" and (len(recovered.keys), len(recovered.argv)) == arity("SERVER_RECOVERED")
    (probes,) = fake.named("SERVER_PROBES")
    assert probes.argv[2] == 30_000  # SERVER_PROBE_MAX, in ms
    assert fake.named("SERVER_RENEW") == []  # nothing held: nothing renewed


def test_a_waiter_leaves_every_line_it_stood_in() -> None:
    left, fake, _ = pool()
    left.forget("w1", "acme")
    keys = config().keys
    assert [(call.name, call.args) for call in fake.calls] == [
        ("zrem", (keys.server_waiting("m"), "w1")),
        ("zrem", (keys.server_tenant_waiting("m", "acme"), "w1")),
        ("hdel", (keys.server_beats("m"), "w1")),
        ("delete", (keys.server_wake_prefix("m") + "w1",)),
    ]


def test_a_wait_is_woken_on_its_own_list_and_a_late_nothing_came_is_no_failure() -> None:
    waiting, fake, _ = pool({"blpop": redis.TimeoutError("Timeout reading from socket")})
    waiting.wait("w1", 0.001)
    (call,) = fake.calls
    assert call.args == ([config().keys.server_wake_prefix("m") + "w1"],) and call.kwargs == {"timeout": 0.01}
    waiting.wait("w1", 0)
    assert len(fake.calls) == 1  # no time left: no wait


def test_a_cancel_wakes_the_waiter_and_a_redis_away_does_not_fail_it() -> None:
    fake = ScriptedRedis()
    Waker(fake, "wake:w1").abort()  # type: ignore[arg-type]
    assert [(call.name, call.args) for call in fake.calls] == [
        ("rpush", ("wake:w1", 1)),
        ("pexpire", ("wake:w1", 60000)),
    ]
    fake.away = AWAY
    Waker(fake, "wake:w1").abort()  # type: ignore[arg-type]


def test_the_keeper_keeps_every_pool_and_goes_on_after_a_redis_away(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(PoolKeeper, "EVERY", 0.01)
    first, lost, _ = pool({"SERVER_RECLAIM": 0, "SERVER_PROBES": []})
    second, kept, _ = pool({"SERVER_RECLAIM": 0, "SERVER_PROBES": []})
    lost.away = AWAY
    keeper = PoolKeeper(lambda: [first, second], lambda model, server: None)
    try:
        calls: list[Call] = kept.wait_for("SERVER_RECLAIM", 2)
    finally:
        keeper.stop()
    assert len(calls) >= 2 and len(lost.named("SERVER_RECLAIM")) >= 1
