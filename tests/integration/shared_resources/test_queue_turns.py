"""Queue turns: a model's queue is taken by tenants in turns, so a backlog is its owner's wait alone;
the tenants are those of now, projects made through the Administration API while the
gateway runs among them (a gateway without a keys file too), an archived project's
waiting jobs still run. Counted, not timed: the order the jobs reach the model server."""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from testing.fake_model_server import FakeModelServer, free_port
from testing.openai_sdk import admin_client
from tests.conftest import Stack, StackFactory
from tests.faults.test_fair_share import _dispatcher as dispatcher
from tests.faults.test_fair_share import auth, fair_stack, saturate, started, submit, wait_all

pytestmark = pytest.mark.integration


def usage_tokens(url: str, key: str, jobs: int) -> int:
    """The tenant's billed tokens once `jobs` of its jobs are counted."""
    deadline = time.monotonic() + 30
    while True:
        rows = httpx.get(f"{url}/usage", headers=auth(key), timeout=10).json()["data"]
        if sum(row["jobs"] for row in rows) >= jobs or time.monotonic() > deadline:
            return sum(row["total_tokens"] for row in rows)
        time.sleep(0.2)


def test_hostile_tenant_beside_normal_keeps_its_backlog_to_itself(
    make_stack: StackFactory, fake: FakeModelServer, tmp_path: Path
) -> None:
    fake.latency = 0.2
    stack = fair_stack(make_stack, tmp_path)
    saturate(stack, fake)
    backlog = [f"heavy-{n}" for n in range(40)]
    for job_id in backlog:
        submit(stack.url, "key-heavy", job_id)
    before = len(fake.completions)  # the jobs started before light's was sent
    body = {"messages": [{"role": "user", "content": "light-1"}]}
    answer = httpx.post(f"{stack.url}/v1/chat/completions", json=body, headers=auth("key-light"), timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"] == "echo: light-1"
    # Its place in line: without turns it would start after what is left of the 40 (at
    # 2 slots of 0.2 s); it starts once the few jobs already in the model's queue have.
    order = started(fake)
    ahead = [job for job in order[before : order.index("light-1")] if job.startswith("heavy-")]
    assert len(ahead) <= 4, ahead
    # Its bill is its own job's tokens, as its answer reported them.
    assert usage_tokens(stack.url, "key-light", 1) == answer.json()["usage"]["total_tokens"]
    assert set(wait_all(stack.url, backlog).values()) == {"succeeded"}
    runs = Counter(started(fake))
    assert runs["light-1"] == 1 and all(runs[job_id] == 1 for job_id in backlog)


ADMIN_KEY = "sk-admin-test-fair-5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b"


def projects_stack(make_stack: StackFactory, **env: str) -> tuple[Stack, str]:
    """A gateway of two API processes, no keys file, no API_KEYS: its tenants are the
    projects made at runtime (and the default tenant)."""
    stack = make_stack(concurrency=2, ADMIN_API_KEYS=ADMIN_KEY, FAIR_SHARE_AHEAD="2", **env)
    port = free_port()
    stack.processes.api(stack.env, port)
    return stack, f"http://127.0.0.1:{port}"


def project(stack: Stack, name: str, *urls: str) -> str:
    """A project made through the Administration API, and its key, once the key works on
    every API process of `urls` (each then follows it in its turns within its next watch)."""
    admin = admin_client(stack.url, ADMIN_KEY).admin.organization
    made = admin.projects.create(name=name)
    account = admin.projects.service_accounts.create(made.id, name="bot")
    assert account.api_key is not None
    key = account.api_key.value
    deadline = time.monotonic() + 10
    for url in urls:
        while httpx.get(f"{url}/v1/files", headers=auth(key), timeout=10).status_code != 200:
            assert time.monotonic() < deadline, f"project {made.id} not known to {url}"
            time.sleep(0.02)
    time.sleep(0.1)  # every API process's watch (every 20 ms) has read it
    return key


def hostile_ahead(order: list[str], since: int, job: str) -> list[str]:
    """The flooding project's jobs that reached the model server after `since` (the count
    started when `job` was sent) and before `job`."""
    return [name for name in order[since : order.index(job)] if name.startswith("flood-")]


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_projects_made_at_runtime_take_turns_beside_one_flooding_the_model(
    make_stack: StackFactory, fake: FakeModelServer, broker_env: dict[str, str], queue_type: str
) -> None:
    if queue_type == "quorum" and not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("quorum queues are RabbitMQ's")
    fake.latency = 0.2
    stack, second = projects_stack(make_stack, RABBIT_MQ_QUEUE_TYPE=queue_type)
    hostile = project(stack, "hostile", stack.url, second)
    light = project(stack, "light", stack.url, second)
    saturate(stack, fake, key=hostile)
    # The flood: held at the workers while it is sent (and while the late project is
    # made), so it waits as one backlog whatever the machine's speed.
    flood = [f"flood-{n}" for n in range(60)]
    fake.latency = 3.0
    for job_id in flood:
        submit(stack.url, hostile, job_id)
    before = len(fake.completions)
    submit(second, light, "light-1")  # through the other API process
    # A project made while the flood waits: it takes turns too, on both processes.
    late = project(stack, "late", stack.url, second)
    made = len(fake.completions)
    submit(stack.url, late, "late-1")
    fake.latency = 0.2
    assert set(wait_all(stack.url, ["light-1"], key=light).values()) == {"succeeded"}
    assert set(wait_all(second, ["late-1"], key=late).values()) == {"succeeded"}
    assert set(wait_all(stack.url, flood, key=hostile).values()) == {"succeeded"}
    order = started(fake)
    # Without turns each would start after what is left of the 60 (at 2 slots of 0.2 s);
    # with them, once the few jobs already in the model's queue (FAIR_SHARE_AHEAD) and
    # those the workers hold have started.
    assert len(hostile_ahead(order, before, "light-1")) <= 5, hostile_ahead(order, before, "light-1")
    assert len(hostile_ahead(order, made, "late-1")) <= 5, hostile_ahead(order, made, "late-1")
    # The flood was still waiting then: the late project's job overtook it.
    assert order.index("late-1") < order.index(flood[-1]) - 10
    runs = Counter(order)
    assert all(runs[job_id] == 1 for job_id in [*flood, "light-1", "late-1"])


def test_two_projects_backlogs_share_the_model_by_turns_and_an_archived_ones_jobs_still_run(
    make_stack: StackFactory, fake: FakeModelServer
) -> None:
    fake.latency = 0.2
    stack, second = projects_stack(make_stack)
    one = project(stack, "one", stack.url, second)
    two = project(stack, "two", stack.url, second)
    saturate(stack, fake, key=one)
    ones = [f"one-{n}" for n in range(30)]
    twos = [f"two-{n}" for n in range(30)]
    fake.latency = 3.0  # both backlogs built before the turns are taken
    for n in range(30):
        submit(stack.url, one, ones[n])
        submit(second, two, twos[n])
    # Archived while its jobs wait in its queue: its key stops working, its jobs run all
    # the same (the dispatcher reads its queue until it is empty), none twice.
    admin = admin_client(stack.url, ADMIN_KEY).admin.organization
    (archived,) = [p.id for p in admin.projects.list() if p.name == "one"]
    admin.projects.archive(archived)
    fake.latency = 0.2
    assert httpx.get(f"{stack.url}/v1/files", headers=auth(one), timeout=10).status_code == 401
    assert set(wait_all(second, twos, key=two).values()) == {"succeeded"}
    deadline = time.monotonic() + 60
    while not set(ones) <= set(started(fake)):
        assert time.monotonic() < deadline, sorted(set(ones) - set(started(fake)))
        time.sleep(0.2)
    order = [job for job in started(fake) if not job.startswith("warm-")]
    runs = Counter(order)
    assert all(runs[job_id] == 1 for job_id in [*ones, *twos]), runs
    # Weight 1 each: while both wait, one turn each. Of the 24 jobs started once the
    # queue's head was passed, about half are each project's.
    window = order[4:28]
    share = sum(job.startswith("one-") for job in window) / len(window)
    assert 0.4 <= share <= 0.6, (share, window)


@pytest.mark.fault
def test_an_archived_projects_waiting_jobs_are_moved_by_the_dispatcher_that_takes_over(
    make_stack: StackFactory, fake: FakeModelServer
) -> None:
    fake.latency = 0.2
    # A short lease: on a Redis broker the killed process's messages come back once it lapses.
    stack, second = projects_stack(make_stack, JOB_LEASE="6")
    one = project(stack, "one", stack.url, second)
    two = project(stack, "two", stack.url, second)
    saturate(stack, fake, key=one)
    ones = [f"one-{n}" for n in range(30)]
    twos = [f"two-{n}" for n in range(10)]
    fake.latency = 3.0  # the workers held: the backlogs wait in the projects' queues
    for job_id in ones:
        submit(stack.url, one, job_id)
    for job_id in twos:
        submit(second, two, job_id)
    admin = admin_client(stack.url, ADMIN_KEY).admin.organization
    (archived,) = [p.id for p in admin.projects.list() if p.name == "one"]
    admin.projects.archive(archived)
    # The dispatcher killed: the one that takes over has never known "one" as a tenant,
    # and finds its jobs in its queue all the same.
    leader = dispatcher(stack)
    survivor = second if leader is stack.processes.started[1] else stack.url
    leader.stop(signal.SIGKILL)
    assert sum(job in ones for job in started(fake)) < 20  # most still waited
    fake.latency = 0.2
    assert set(wait_all(survivor, twos, key=two).values()) == {"succeeded"}
    deadline = time.monotonic() + 90
    while not set(ones) <= set(started(fake)):
        assert time.monotonic() < deadline, sorted(set(ones) - set(started(fake)))
        time.sleep(0.2)
    runs = Counter(started(fake))
    assert all(runs[job_id] == 1 for job_id in [*ones, *twos]), runs
