"""RABBIT_MQ_QUEUE_TYPE=quorum on this machine's RabbitMQ (a quorum queue runs on one
node too): what relies on classic priority queues keeps working on quorum queues:
priorities (as bands), dead letters, queue depth and position.

The failovers of a 3-node cluster are tests/faults/test_cluster_faults.py's."""

from __future__ import annotations

import asyncio
import subprocess
from collections import Counter

import httpx
import pytest

from api.jobs.queue import JobQueue
from shared.broker.queues import bands
from tasks import dead_letters
from testing.fake_model_server import FakeModelServer
from testing.load import Tally, ids, job_status, post_all, wait_until
from testing.webhook_receiver import WebhookReceiver
from tests.conftest import Stack, StackFactory
from tests.integration.test_webhooks import receiver as receiver
from tests.integration.test_webhooks import webhook_env

pytestmark = pytest.mark.integration


@pytest.fixture
def quorum(make_stack: StackFactory, broker_env: dict[str, str]) -> StackFactory:
    if not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("quorum queues are RabbitMQ's")

    def make(**kwargs: object) -> Stack:
        return make_stack(RABBIT_MQ_QUEUE_TYPE="quorum", **kwargs)

    return make


def _queue_types(names: list[str]) -> dict[str, str]:
    listed = subprocess.run(
        ["rabbitmqctl", "list_queues", "name", "type", "-q", "--no-table-headers"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    types = dict(line.split("\t")[:2] for line in listed.splitlines() if "\t" in line)
    return {name: types.get(name, "missing") for name in names}


async def _submit(url: str, jobs: list[tuple[str, int]]) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        for job_id, priority in jobs:
            body = {"job_id": job_id, "content": job_id, "meta": {"priority": priority}}
            assert (await client.post("/generate?wait=0", json=body)).status_code == 202


def test_quorum_queues_start_waiting_jobs_most_urgent_first(quorum: StackFactory, fake: FakeModelServer) -> None:
    stack = quorum(workers=0, MAX_QUEUED_JOBS="28")
    config = stack.config
    # Batch work (priority 0), the default (5), then urgent jobs (9), all waiting.
    asyncio.run(_submit(stack.url, [*((f"low-{i}", 0) for i in range(20)), *((f"mid-{i}", 5) for i in range(5))]))
    asyncio.run(_submit(stack.url, [(f"high-{i}", 9) for i in range(3)]))
    # Three bands, each a quorum queue, with the depth of all three and each job's place.
    assert set(_queue_types(bands(config, config.queue_name)).values()) == {"quorum"}
    queue = JobQueue(config)
    try:
        wait_until(lambda: queue.depths([config.queue_name])[config.queue_name] == 28, 10, "28 jobs counted")
    finally:
        queue.close()
    assert httpx.get(f"{stack.url}/jobs/low-0", timeout=10).json()["queue_position"] == 1
    # MAX_QUEUED_JOBS counts (in Redis) the waiting jobs of every band.
    refused = httpx.post(f"{stack.url}/generate?wait=0", json={"job_id": "one-more", "content": "x"}, timeout=10)
    assert refused.status_code == 429, refused.text
    assert refused.json()["detail"].startswith("queue full: 28 jobs waiting to start, at most 28"), refused.text

    # Jobs of a model's length, not instant ones: the worker receives the band's next
    # job one acknowledgement after it started the last.
    fake.latency = 0.1
    stack.processes.worker(stack.env, concurrency=1)
    wait_until(lambda: len(fake.completions) >= 28, 60, "28 jobs to run")
    order = [body["messages"][-1]["content"] for body in fake.completions]
    # The worker holds two jobs of each band per slot and starts the most urgent it
    # holds: the urgent jobs first, then the default ones, then the batch's (but the
    # one job it may have started as the first message arrived).
    assert max(order.index(f"high-{i}") for i in range(3)) < 4, order[:8]
    assert max(order.index(f"mid-{i}") for i in range(5)) < 9, order[:12]
    assert [job for job in order if job.startswith("low-")] == [f"low-{i}" for i in range(20)]


def test_quorum_queues_keep_and_replay_dead_letters(
    quorum: StackFactory, fake: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = quorum(workers=1, LLM_MAX_RETRIES="0")
    for name, value in stack.env.items():
        monkeypatch.setenv(name, value)
    fake.stop()
    try:
        failed = Tally()
        asyncio.run(post_all(stack.url, ids("qdead", 4), 4, failed))
    finally:
        fake.start()
    assert failed.statuses() == Counter({502: 4})
    config = stack.config
    assert _queue_types([config.dead_letter_queue]) == {config.dead_letter_queue: "quorum"}
    wait_until(lambda: len(dead_letters.list_dead(config)) == 4, 15, "4 dead letters")
    assert sorted(dead_letters.replay(config, None).replayed) == ids("qdead", 4)
    wait_until(
        lambda: all(job_status(stack, job) == "succeeded" for job in ids("qdead", 4)), 30, "replayed jobs to run"
    )
    assert dead_letters.list_dead(config) == []


def test_quorum_queues_answer_streams_and_every_priority(quorum: StackFactory, fake: FakeModelServer) -> None:
    stack = quorum(workers=1)
    for priority in (0, 5, 9):
        answer = httpx.post(
            f"{stack.url}/generate",
            json={"job_id": f"p{priority}", "content": "q", "meta": {"priority": priority}},
            timeout=30,
        )
        assert answer.status_code == 200 and answer.json()["content"] == "echo: q"
    with httpx.stream(
        "POST",
        f"{stack.url}/v1/chat/completions",
        json={"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "stream": True},
        timeout=30,
    ) as streamed:
        text = "".join(streamed.iter_text())
    assert streamed.status_code == 200 and "data: [DONE]" in text


def test_quorum_queues_retry_a_webhook_delivery_through_rabbitmqs_delayed_delivery(
    quorum: StackFactory, fake: FakeModelServer, receiver: WebhookReceiver
) -> None:
    # Tries 1.5 s apart at most: the later ones wait in RabbitMQ's delayed-delivery
    # queues (whole seconds), not in the worker.
    receiver.answers = [503, 502, 500]
    stack = quorum(**webhook_env(receiver, WEBHOOK_MAX_BACKOFF="1.5"))
    assert httpx.post(f"{stack.url}/generate?wait=0", json={"job_id": "j-1", "content": "x"}).status_code == 202
    receiver.wait_for(1, "job.succeeded")
    tries = [r for r in receiver.received if b'"j-1"' in r.body]
    assert [r.status for r in tries] == [503, 502, 500, 200]
    assert len({r.headers["webhook-id"] for r in tries}) == 1
    worker_log = "".join(process.output() for process in stack.processes.started if process.name.startswith("worker"))
    assert "direct exchange" not in worker_log and "delayed delivery not set up" not in worker_log
