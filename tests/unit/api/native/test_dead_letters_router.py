"""``/dead_letters`` (api/native/dead_letters_router.py): the replay's body, what a listing
and a replay answer, and a broker or Redis that does not answer named as such. Listing
and replaying on a real broker: tests/integration/api/test_dead_letters.py."""

from __future__ import annotations

import asyncio

import pytest
from kombu.exceptions import OperationalError
from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError

from api.errors import BrokerUnavailable, ResultStoreUnavailable
from api.native.dead_letters_router import Replay, listed, off_the_loop, replayed
from shared.broker.dead_letters import Replayed
from shared.config import Config

pytestmark = pytest.mark.unit

CONFIG = Config(_env_file=None, rabbit_mq_host="mq")  # type: ignore[call-arg]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"job_ids": []},
        {"all": True},
        {"job_ids": ["a"], "all": True},
        {"job_ids": [""]},
        {"job_ids": ["x" * 301]},
        {"job_ids": ["j"] * 1001},
    ],
)
def test_a_replay_names_its_jobs_one_to_a_thousand(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Replay.model_validate(body)
    assert Replay.model_validate({"job_ids": ["alpha~j1", "j2"]}).job_ids == ["alpha~j1", "j2"]


def test_each_dead_letter_is_listed_with_its_jobs_tenant() -> None:
    found = [{"job_id": "alpha~j1", "task": "llm.chat"}, {"job_id": "j2"}, {"job_id": None, "task": None}]
    assert [entry["tenant"] for entry in listed(found)] == ["alpha", "default", None]
    assert listed(found)[0]["task"] == "llm.chat"


def test_a_replay_names_what_it_replayed_skipped_and_did_not_find() -> None:
    done = Replayed(replayed=["j1"], skipped={"j2": "answered since it failed"})
    assert replayed({"j1", "j2", "j9", "j3"}, done) == {
        "replayed": ["j1"], "skipped": {"j2": "answered since it failed"}, "missing": ["j3", "j9"],
    }  # fmt: skip


def test_a_broker_or_redis_that_does_not_answer_is_named() -> None:
    def broker_down() -> None:
        raise OperationalError("[Errno 111] Connection refused")

    def redis_down() -> None:
        raise RedisConnectionError("Error 111 connecting")

    with pytest.raises(BrokerUnavailable, match=r"broker \(RabbitMQ\) unavailable"):
        asyncio.run(off_the_loop(CONFIG, broker_down))
    with pytest.raises(ResultStoreUnavailable, match="no dead letter was replayed"):
        asyncio.run(off_the_loop(CONFIG, redis_down))
    assert asyncio.run(off_the_loop(CONFIG, lambda: 7)) == 7
