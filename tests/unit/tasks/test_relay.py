"""A streamed job's pieces relayed through a Redis stream: in order, once each, after what
an earlier run relayed, and never the job's failure. Redis is scripted at the edge
(testing/scripted_redis.py); RELAY_ADD itself runs on a real Redis in
tests/integration/tasks/test_relay.py."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tasks import relay
from tasks.relay import Relay
from testing.scripted_redis import AWAY, ScriptedRedis, arity

pytestmark = pytest.mark.unit


def added(fake: ScriptedRedis) -> list[tuple[int, int, list[dict[str, Any]]]]:
    """Each RELAY_ADD: the TTL, the entries the stream held before, and the entries added."""
    return [(call.argv[0], call.argv[1], [json.loads(entry) for entry in call.argv[2:]])
            for call in fake.named("RELAY_ADD")]  # fmt: skip


def test_each_piece_is_added_as_it_comes_and_the_end_sets_the_shorter_ttl() -> None:
    fake = ScriptedRedis({"RELAY_ADD": 1})
    stream = Relay(fake, "p:stream:j1", ttl=900, kept=60)  # type: ignore[arg-type]
    stream.delta(0, "Hel")
    stream.delta(0, "lo", {"logprobs": {"content": []}})
    stream.end({"content": "Hello", "choices": [{"index": 0, "content": "Hello"}]})
    (first, second, end) = added(fake)
    assert first == (900, 0, [{"i": "0", "t": "Hel"}])
    assert second == (900, 1, [{"i": "0", "t": "lo", "x": json.dumps({"logprobs": {"content": []}})}])
    assert end[:2] == (60, 2) and json.loads(end[2][0]["end"])["content"] == "Hello"
    call = fake.named("RELAY_ADD")[0]
    assert call.keys == ["p:stream:j1"] and len(call.keys) == arity("RELAY_ADD")[0]


def test_pieces_redis_did_not_take_go_with_the_next_in_order() -> None:
    fake = ScriptedRedis({"RELAY_ADD": 1})
    stream = Relay(fake, "s", ttl=900)  # type: ignore[arg-type]
    fake.away = AWAY
    stream.delta(0, "a")  # not a failure of the job
    stream.delta(0, "b")
    fake.away = None
    stream.delta(0, "c")
    tries = added(fake)
    # Each try carries every piece not taken yet, counted from where the stream was.
    assert tries[-1] == (900, 0, [{"i": "0", "t": "a"}, {"i": "0", "t": "b"}, {"i": "0", "t": "c"}])
    stream.delta(0, "d")
    assert added(fake)[-1] == (900, 3, [{"i": "0", "t": "d"}])


def test_a_run_after_one_that_died_relays_only_past_what_its_readers_had() -> None:
    earlier = [(b"1-0", {b"i": b"0", b"t": b"Hel"}), (b"2-0", {b"i": b"0", b"t": b"lo"}),
               (b"3-0", {b"i": b"1", b"t": b"Bye"})]  # fmt: skip
    fake = ScriptedRedis({"xrange": earlier, "RELAY_ADD": 1})
    stream = Relay(fake, "s", ttl=900)  # type: ignore[arg-type]
    stream.resume()
    for index, text in [(0, "He"), (0, "llo"), (0, " you"), (1, "See"), (1, " ya")]:
        stream.delta(index, text)
    assert [entries for _, _, entries in added(fake)] == [[{"i": "0", "t": " you"}], [{"i": "1", "t": " ya"}]]
    assert added(fake)[0][1] == 3  # after the earlier run's entries
    answer = {
        "content": "Hello you",
        "choices": [{"index": 0, "content": "Hello you"}, {"index": 1, "content": "See ya"}],
    }
    stream.end(answer)
    # The answer is what its readers were sent: the earlier run's pieces, then this run's.
    assert [choice["content"] for choice in answer["choices"]] == ["Hello you", "Bye ya"]
    assert answer["content"] == "Hello you"


def test_a_stream_redis_lost_is_given_up_and_its_readers_read_the_result() -> None:
    fake = ScriptedRedis({"RELAY_ADD": -1})
    stream = Relay(fake, "s", ttl=900)  # type: ignore[arg-type]
    stream.delta(0, "a")
    stream.delta(0, "b")
    stream.end({"content": "ab", "choices": []})
    assert len(fake.named("RELAY_ADD")) == 1


def test_an_end_redis_does_not_take_in_time_never_fails_the_job(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(relay, "RELAY_PATIENCE", 0.0)
    fake = ScriptedRedis()
    fake.away = AWAY
    Relay(fake, "s", ttl=900).end({"content": "", "choices": []})  # type: ignore[arg-type]
    assert len(fake.named("RELAY_ADD")) == 1
