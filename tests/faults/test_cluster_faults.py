"""The clustered setup under load, with one node of it killed (SIGKILL, as a host that dies):

- a 3-node RabbitMQ cluster with quorum queues, and the node leading the job queue killed;
- Redis with one replica and three Sentinels, and the master killed.

Every job the API accepted is answered once, with its own answer; a job refused
while the fault lasted is refused with a 503 naming the broker or the result store,
and answered when sent again. Each test prints how long the fault stalled the
answers (pytest -s shows it). Each starts its own cluster on free ports and data
folders of its own (testing/clusters.py), and stops it after.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from testing.clusters import RabbitCluster, SentinelRedis, rabbitmq_available
from testing.fake_model_server import FakeModelServer
from testing.load import Tally, ids, post_all, refused_by_broker, refused_by_store, under_load, wait_until
from testing.processes import REDIS, reachable
from tests.conftest import Stack, _stack_factory

pytestmark = [pytest.mark.fault, pytest.mark.alone]  # three RabbitMQ nodes and Sentinels load the whole machine

JOBS = 300
CONCURRENCY = 32


@pytest.fixture
def rabbit_cluster(tmp_path: Path) -> Iterator[RabbitCluster]:
    why = rabbitmq_available()
    if why:
        pytest.skip(why)
    cluster = RabbitCluster(tmp_path / "rabbit")
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture
def sentinel_redis(tmp_path: Path) -> Iterator[SentinelRedis]:
    servers = SentinelRedis(tmp_path / "redis")
    try:
        yield servers.start()
    finally:
        servers.stop()


def _stall(tally: Tally, since: float) -> float:
    """The longest time without an answer from `since` (the fault) on: how long the
    gateway took to answer again, once the jobs in flight were answered."""
    times = sorted(
        t for job, t in tally.finished.items() if t >= since and not isinstance(tally.answers[job], Exception)
    )
    if not times:
        return float("inf")
    return max(b - a for a, b in zip([since, *times], times, strict=False))


def _check(stack: Stack, tally: Tally, refused: set[str]) -> None:
    accepted = {job: answer for job, answer in tally.answers.items() if job not in refused}
    Tally(accepted).assert_all_answered(stack)
    # What was refused is answered when sent again; and new jobs are.
    again = Tally()
    asyncio.run(post_all(stack.url, [*sorted(refused), *ids("after", 30)], 10, again))
    again.assert_all_answered(stack)


def test_killing_the_node_that_leads_the_job_queue_loses_no_accepted_job(
    rabbit_cluster: RabbitCluster, fake: FakeModelServer, tmp_path: Path
) -> None:
    if not reachable(REDIS):
        pytest.skip("this machine's Redis is not running")
    env = {"RABBIT_MQ_HOST": rabbit_cluster.hosts, "RABBIT_MQ_QUEUE_TYPE": "quorum",
           "REDIS_HOST": REDIS[0], "REDIS_PORT": str(REDIS[1])}  # fmt: skip
    make, cleanup = _stack_factory(tmp_path, fake, env)
    try:
        stack = make(workers=2, concurrency=16)
        queue = stack.config.queue_name
        fake.latency = 0.2
        killed: dict[str, object] = {}

        def kill_leader() -> None:
            wait_until(lambda: len(fake.completions) >= 40, 60, "jobs to run")
            leader = rabbit_cluster.leader_of(queue)
            killed["node"], killed["at"] = leader.name, time.monotonic()
            rabbit_cluster.kill(leader)
            wait_until(lambda: rabbit_cluster.leader_of(queue).name != leader.name, 30, "a new leader")
            killed["new_leader_after"] = time.monotonic() - killed["at"]  # type: ignore[operator]

        tally = under_load(stack.url, ids("qq", JOBS), CONCURRENCY, kill_leader)
        refused = {job for job, answer in tally.answers.items() if refused_by_broker(answer)}
        stall = _stall(tally, killed["at"])  # type: ignore[arg-type]
        tally.report("quorum queue leader killed", fake, killed=killed["node"], refused=len(refused),
                     new_leader_s=f"{killed['new_leader_after']:.2f}", stall_s=f"{stall:.2f}")  # fmt: skip
        _check(stack, tally, refused)
        assert len(refused) < JOBS // 2, tally.statuses()
        # The job queue still has a quorum (2 of 3) and a leader on a node alive.
        assert rabbit_cluster.leader_of(queue).name != killed["node"]
    finally:
        cleanup()


def test_killing_the_redis_master_loses_no_accepted_job_and_leaves_no_waiter(
    sentinel_redis: SentinelRedis, fake: FakeModelServer, broker_env: dict[str, str], tmp_path: Path
) -> None:
    if not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("Sentinels are for the result store beside RabbitMQ")
    env = {**broker_env, "REDIS_SENTINELS": sentinel_redis.sentinels, "REDIS_HOST": "", "REDIS_PORT": "0"}
    make, cleanup = _stack_factory(tmp_path, fake, env)
    try:
        stack = make(workers=2, concurrency=16)
        fake.latency = 0.2
        killed: dict[str, float] = {}

        def kill_master() -> None:
            wait_until(lambda: len(fake.completions) >= 40, 60, "jobs to run")
            killed["at"] = time.monotonic()
            old = sentinel_redis.kill_master()
            wait_until(lambda: sentinel_redis.master_port() != old, 30, "the Sentinels to promote the replica")
            killed["promoted_after"] = time.monotonic() - killed["at"]

        tally = under_load(stack.url, ids("sent", JOBS), CONCURRENCY, kill_master)
        refused = {job for job, answer in tally.answers.items() if refused_by_store(answer)}
        stall = _stall(tally, killed["at"])
        tally.report("Redis master killed", fake, refused=len(refused),
                     promoted_s=f"{killed['promoted_after']:.2f}", stall_s=f"{stall:.2f}")  # fmt: skip
        _check(stack, tally, refused)
        assert len(refused) < JOBS // 2, tally.statuses()
        # The new master holds every accepted job's result.
        master = sentinel_redis.master()
        prefix = stack.config.keys.result("")
        held = {key.decode().removeprefix(prefix) for key in master.scan_iter(match=f"{prefix}*", count=1000)}
        assert {job for job in tally.answers if job not in refused} <= held
    finally:
        cleanup()


def test_a_gateway_of_sentinels_answers_streams_and_cancels(
    sentinel_redis: SentinelRedis, fake: FakeModelServer, broker_env: dict[str, str], tmp_path: Path
) -> None:
    if not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("Sentinels are for the result store beside RabbitMQ")
    env = {**broker_env, "REDIS_SENTINELS": sentinel_redis.sentinels, "REDIS_HOST": "", "REDIS_PORT": "0"}
    make, cleanup = _stack_factory(tmp_path, fake, env)
    try:
        stack = make(workers=1)
        with httpx.stream(
            "POST",
            f"{stack.url}/v1/chat/completions",
            json={"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "stream": True},
            timeout=30,
        ) as streamed:
            text = "".join(streamed.iter_text())
        assert streamed.status_code == 200 and "data: [DONE]" in text
        # A job cancelled while it runs is stopped: the worker's cancel listener hears
        # it through the master the Sentinels name.
        fake.stall_after, fake.stall = 2, 30.0
        assert httpx.post(f"{stack.url}/generate?wait=0", json={"job_id": "long", "content": "x"}).status_code == 202
        wait_until(lambda: fake.stalling == 1, 20, "the model server to pause")
        assert httpx.delete(f"{stack.url}/jobs/long", timeout=10).status_code == 200
        wait_until(lambda: fake.disconnects_while_stalled == 1, 10, "the model server to see the connection close")
        assert httpx.get(f"{stack.url}/jobs/long", timeout=10).json()["status"] == "cancelled"
        # The result store is the Sentinels' master, not REDIS_HOST.
        assert any(sentinel_redis.master().scan_iter(match=f"{stack.config.redis_prefix}:*"))
    finally:
        cleanup()
