"""Tenants share a busy model's workers by weight, across API processes, priorities first."""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from testing.fake_model_server import FakeModelServer, free_port
from testing.load import rabbitmq_stopped, redis_binary
from testing.processes import RedisServer
from tests.conftest import Stack, StackFactory

pytestmark = pytest.mark.integration

TENANTS = """
tenants:
  - name: heavy
    weight: 3
    keys: ["key-heavy"]
  - name: light
    weight: 1
    keys: ["key-light"]
    quotas: {max_priority: 9}  # its urgent jobs are urgent
"""


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def fair_stack(make_stack: StackFactory, tmp_path: Path, **overrides: str) -> Stack:
    keys_file = tmp_path / "tenants.yaml"
    keys_file.write_text(TENANTS)
    return make_stack(concurrency=2, API_KEYS_FILE=str(keys_file), FAIR_SHARE_AHEAD="2", **overrides)


def submit(url: str, key: str, job_id: str, priority: int = 5) -> None:
    body = {"job_id": job_id, "content": job_id, "meta": {"priority": priority}}
    answer = httpx.post(f"{url}/generate?wait=0", json=body, headers=auth(key), timeout=30)
    assert answer.status_code == 202, answer.text


def contended(stack: Stack) -> bool:
    client = redis.Redis(port=int(stack.env.get("REDIS_PORT", "6379")))
    try:
        return bool(client.exists(f"{stack.env['REDIS_PREFIX']}:fair:{stack.env['QUEUE_NAME']}"))
    finally:
        client.close()


def saturate(stack: Stack, fake: FakeModelServer, key: str = "key-heavy") -> None:
    """Keep the workers busy (with `key`'s jobs) until the model counts as contended.

    The model is slowed meanwhile: at a test's own latency (0.1 s, two slots) the
    workers drain jobs about as fast as one client sends them on a loaded machine, and
    the queue never grew (the model stayed uncontended for 30 s in CI)."""
    latency, fake.latency = fake.latency, max(fake.latency, 1.0)
    try:
        deadline = time.monotonic() + 30
        n = 0
        while not contended(stack):
            assert time.monotonic() < deadline, "the model never became contended"
            for _ in range(6):
                submit(stack.url, key, f"warm-{n}")
                n += 1
            time.sleep(0.05)
    finally:
        fake.latency = latency
    time.sleep(0.2)  # every API process has read it (each reads every 20 ms)


def wait_all(url: str, job_ids: list[str], key: str | None = None, timeout: float = 120) -> dict[str, str]:
    """Each job's status once all have succeeded (or the timeout passed), each asked with
    its tenant's key (`key`, or light's for light-*, heavy's for the rest): another
    tenant's job is one it does not have."""
    deadline = time.monotonic() + timeout
    statuses: dict[str, str] = {}
    while time.monotonic() < deadline:
        for job_id in job_ids:
            if statuses.get(job_id) == "succeeded":
                continue
            try:
                whose = key or ("key-light" if job_id.startswith("light") else "key-heavy")
                answer = httpx.get(f"{url}/jobs/{job_id}", headers=auth(whose), timeout=10)
            except httpx.HTTPError:
                break  # the API is not there (a fault): asked again next time
            if answer.status_code == 200:
                statuses[job_id] = answer.json()["status"]
        if all(status == "succeeded" for status in statuses.values()) and len(statuses) == len(job_ids):
            return statuses
        time.sleep(0.3)
    return {job_id: statuses.get(job_id, "not found") for job_id in job_ids}  # one never found says so


def started(fake: FakeModelServer) -> list[str]:
    """The jobs' contents, in the order the model server was asked."""
    return [body["messages"][-1]["content"] for body in fake.completions]


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_backlogged_tenants_take_turns_by_weight_with_priority_first(
    make_stack: StackFactory, fake: FakeModelServer, tmp_path: Path, broker_env: dict[str, str], queue_type: str
) -> None:
    if queue_type == "quorum" and not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("quorum queues are RabbitMQ's")
    fake.latency = 0.2
    # Quorum queues: the tenants' queues and the model's bands are quorum queues, and
    # the dispatcher moves a job into its priority's band.
    stack = fair_stack(make_stack, tmp_path, RABBIT_MQ_QUEUE_TYPE=queue_type)
    # A second API process: the jobs it takes wait their turn as the first one's do.
    second = f"http://127.0.0.1:{free_port()}"
    stack.processes.api(stack.env, int(second.rsplit(":", 1)[1]))
    saturate(stack, fake)
    heavy = [f"heavy-{n}" for n in range(30)]
    light = [f"light-{n}" for n in range(30)]
    # The workers held while both backlogs are built: on a slow machine the dispatcher
    # would otherwise take turns while each tenant has one job waiting, one for one.
    fake.latency = 3.0
    for n in range(30):
        submit(stack.url, "key-heavy", heavy[n])
        submit(second, "key-light", light[n])
    fake.latency = 0.2
    before = len(fake.completions)
    submit(second, "key-light", "light-urgent", priority=9)
    statuses = wait_all(stack.url, [*heavy, *light, "light-urgent"])
    assert set(statuses.values()) == {"succeeded"}
    order = [job for job in started(fake) if not job.startswith("warm-")]
    assert sorted(order) == sorted([*heavy, *light, "light-urgent"])  # each once
    # The urgent job overtakes both backlogs: only the few already queued start before it.
    # It waits for light's one job already picked as light's next, and light's turn.
    everything = started(fake)
    assert everything.index("light-urgent") - before <= 7
    # While both wait, heavy gets 3 turns for light's 1 (the urgent job took one of
    # light's): of the 24 jobs started once the queue's head was passed, about 18 are heavy's.
    window = order[4:28]
    share = sum(job.startswith("heavy-") for job in window) / len(window)
    assert 0.75 * 0.9 <= share <= 0.75 * 1.1, (share, window)
    # Each tenant's own jobs keep their order: taken one after the other by the worker's
    # two slots, two neighbours may reach the model server either way round, no further.
    heavy_order = [job for job in order if job.startswith("heavy-")]
    assert sorted(heavy_order) == sorted(heavy)
    assert all(abs(heavy_order.index(job) - n) <= 1 for n, job in enumerate(heavy)), heavy_order


def test_one_tenant_alone_has_no_turns_to_take(make_stack: StackFactory, fake: FakeModelServer) -> None:
    stack = make_stack(concurrency=2, FAIR_SHARE_AHEAD="2", API_KEYS="only-key")
    fake.latency = 0.2
    for n in range(8):
        submit(stack.url, "only-key", f"solo-{n}")
    time.sleep(0.5)
    assert not contended(stack)
    assert set(wait_all(stack.url, [f"solo-{n}" for n in range(8)], key="only-key").values()) == {"succeeded"}


def _dispatcher(stack: Stack) -> Any:
    """The API process dispatching the model's jobs (it says so in its log)."""
    (leader,) = [p for p in stack.processes.started if "fairly among" in p.output()]
    return leader


@pytest.mark.fault
def test_a_killed_dispatcher_is_replaced_and_every_job_runs_once(
    make_stack: StackFactory, fake: FakeModelServer, tmp_path: Path
) -> None:
    fake.latency = 0.1
    # A short lease: on a Redis broker the killed process's messages come back once it lapses.
    stack = fair_stack(make_stack, tmp_path, JOB_LEASE="6")
    second = f"http://127.0.0.1:{free_port()}"
    stack.processes.api(stack.env, int(second.rsplit(":", 1)[1]))
    saturate(stack, fake)
    jobs = [f"heavy-{n}" for n in range(40)] + [f"light-{n}" for n in range(20)]
    for job_id in jobs:
        submit(second, "key-heavy" if job_id.startswith("heavy") else "key-light", job_id)
    leader = _dispatcher(stack)
    survivor = second if leader is stack.processes.started[1] else stack.url
    # Killed while it holds the tenants' next jobs and moves others: those go back to
    # their queues, and the other API process takes over once the lock lapses.
    wait_until_some_ran(fake, 10)
    leader.stop(signal.SIGKILL)
    statuses = wait_all(survivor, jobs)
    assert set(statuses.values()) == {"succeeded"}, Counter(statuses.values())
    runs = Counter(started(fake))
    assert all(runs[job_id] == 1 for job_id in jobs), {job_id: runs[job_id] for job_id in jobs if runs[job_id] != 1}
    assert any("fairly among" in p.output() for p in stack.processes.started[1:] if p is not leader)


@pytest.mark.alone
@pytest.mark.fault
def test_rabbitmq_restarted_while_tenants_wait_loses_no_job(
    make_stack: StackFactory, fake: FakeModelServer, tmp_path: Path, broker_env: dict[str, str]
) -> None:
    if not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("RabbitMQ only")
    fake.latency = 0.1
    stack = fair_stack(make_stack, tmp_path)
    saturate(stack, fake)
    jobs = [f"heavy-{n}" for n in range(30)] + [f"light-{n}" for n in range(15)]
    for job_id in jobs:
        submit(stack.url, "key-heavy" if job_id.startswith("heavy") else "key-light", job_id)
    wait_until_some_ran(fake, 5)
    with rabbitmq_stopped():
        time.sleep(1)
    statuses = wait_all(stack.url, jobs, timeout=180)
    assert set(statuses.values()) == {"succeeded"}, Counter(statuses.values())
    runs = Counter(started(fake))
    assert all(runs[job_id] == 1 for job_id in jobs)


@pytest.mark.fault
def test_a_killed_worker_and_a_restarted_redis_while_tenants_wait_lose_no_job(
    make_stack: StackFactory, fake: FakeModelServer, tmp_path: Path, broker_env: dict[str, str]
) -> None:
    server = RedisServer(redis_binary(broker_env), tmp_path / "redis").start()
    try:
        fake.latency = 0.3
        keys_file = tmp_path / "tenants.yaml"
        keys_file.write_text(TENANTS)
        # A short lease: on a Redis broker the killed worker's messages come back once it lapses.
        stack = make_stack(workers=2, concurrency=2, API_KEYS_FILE=str(keys_file), FAIR_SHARE_AHEAD="2",
                           REDIS_HOST="127.0.0.1", REDIS_PORT=str(server.port), JOB_LEASE="6")  # fmt: skip
        saturate(stack, fake)
        jobs = [f"heavy-{n}" for n in range(40)] + [f"light-{n}" for n in range(20)]
        for job_id in jobs:
            submit(stack.url, "key-heavy" if job_id.startswith("heavy") else "key-light", job_id)
        wait_until_some_ran(fake, 6)
        # A worker killed with the jobs it runs; another started in its place.
        stack.processes.started[0].stop(signal.SIGKILL)
        stack.processes.worker(stack.env, name="worker-again", concurrency=2)
        wait_until_some_ran(fake, 16)
        # Redis (the result store, the tenants' turns' lock; with Valkey the broker too) restarted.
        server.stop()
        time.sleep(2)
        server.start()
        statuses = wait_all(stack.url, jobs, timeout=180)
        assert set(statuses.values()) == {"succeeded"}, Counter(statuses.values())
        runs = Counter(started(fake))
        # Each job ran; only those running on the killed worker (its 2 slots) ran again.
        assert all(runs[job_id] >= 1 for job_id in jobs)
        assert sum(runs[job_id] - 1 for job_id in jobs) <= 2, {j: runs[j] for j in jobs if runs[j] > 1}
    finally:
        server.stop()


def wait_until_some_ran(fake: FakeModelServer, count: int) -> None:
    deadline = time.monotonic() + 30
    while sum(not job.startswith("warm-") for job in started(fake)) < count:
        assert time.monotonic() < deadline, "no job ran"
        time.sleep(0.05)
