"""Faults, injected under load: nothing accepted is lost.

Real workers, API, broker and Redis; the fake model server. Each test drives a few
hundred jobs, injects one fault (a worker killed, RabbitMQ or Redis restarted, the
model server down or failing, a job longer than RabbitMQ's consumer timeout, SIGTERM),
and checks that every accepted job_id ends answered exactly once, or failed with
the right message. Each prints its counts (pytest -s shows them).

The machine's RabbitMQ is stopped and started again by one test (rabbitmqctl);
Redis restarts use a server of the test's own, with its data on disk as a
deployment's would be. Services are left running as they were found.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest
import redis
from kombu import Connection

from shared.broker.settings import celery_settings
from shared.config import Config
from shared.contract import STORE_ONCE
from tasks import dead_letters
from testing.fake_model_server import Failure, FakeModelServer
from testing.load import (
    Tally,
    ids,
    is_answer,
    job_status,
    post_all,
    rabbitmq_stopped,
    rabbitmqctl,
    redis_binary,
    refused_by_broker,
    refused_by_store,
    under_load,
    wait_until,
)
from testing.processes import ROOT, Process, RedisServer
from tests.conftest import Stack, StackFactory

pytestmark = pytest.mark.fault


# 1. A worker killed (kill -9), several times, with a second worker running.


def test_killed_workers_lose_no_job(make_stack: StackFactory, fake: FakeModelServer) -> None:
    stack = make_stack(workers=0, JOB_LEASE="4")
    survivor = stack.processes.worker(stack.env, name="survivor", concurrency=8)
    doomed: list[Process] = [stack.processes.worker(stack.env, name="doomed", concurrency=8)]
    fake.latency = 0.25
    kills = 0

    def kill_repeatedly() -> None:
        nonlocal kills
        for _ in range(3):
            wait_until(lambda: fake.in_flight >= 10, 20, "jobs in flight")
            time.sleep(0.3)
            doomed[-1].popen.send_signal(signal.SIGKILL)
            doomed[-1].popen.wait(5)
            kills += 1
            doomed.append(stack.processes.worker(stack.env, name="doomed", concurrency=8))

    tally = under_load(stack.url, ids("kill", 300), 48, kill_repeatedly)
    tally.report("worker kill -9", fake, kills=kills)
    assert kills == 3
    tally.assert_all_answered(stack)
    assert survivor.popen.poll() is None
    # The killed workers held jobs (they were running them): those ran again elsewhere.
    assert len(fake.completions) > 300


# 2. RabbitMQ restarted under load.


@pytest.mark.alone
def test_rabbitmq_restart_loses_no_accepted_job(
    make_stack: StackFactory, fake: FakeModelServer, broker_env: dict[str, str]
) -> None:
    if not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("RabbitMQ only")
    if shutil.which("rabbitmqctl") is None:
        pytest.fail("rabbitmqctl is needed to restart RabbitMQ")
    stack = make_stack(workers=1, concurrency=16)
    fake.latency = 0.2
    refused: dict[str, tuple[int, str, float]] = {}

    sdk = openai.OpenAI(base_url=f"{stack.url}/v1", api_key="unused", max_retries=0, timeout=30,
                        _strict_response_validation=True)  # fmt: skip
    responses: list[str] = []

    def restart() -> None:
        wait_until(lambda: len(fake.completions) >= 20, 30, "jobs to run")
        # Background responses queued behind the load, when RabbitMQ stops.
        responses.extend(sdk.responses.create(model="fake-model", input=f"bg {n}", background=True).id
                         for n in range(3))  # fmt: skip
        with rabbitmq_stopped():
            for job in ("while-down-1", "while-down-2"):
                started = time.monotonic()
                answer = httpx.post(f"{stack.url}/generate", json={"job_id": job, "content": "x"}, timeout=30)
                refused[job] = (answer.status_code, answer.json()["detail"], time.monotonic() - started)

    tally = under_load(stack.url, ids("rmq", 200), 32, restart)
    # Accepted jobs (those the API queued before the stop) were all answered; those it
    # could not queue while RabbitMQ was down were refused with 503, never lost.
    accepted = {job: a for job, a in tally.answers.items() if not refused_by_broker(a)}
    tally.report("RabbitMQ restart", fake, refused_during_outage=len(tally.answers) - len(accepted))
    Tally(accepted).assert_all_answered(stack)
    assert len(accepted) >= 20
    for status, detail, seconds in refused.values():
        assert status == 503 and "RabbitMQ" in detail and seconds < 10
    # The API and the worker reconnect by themselves: new jobs are answered.
    after = Tally()
    asyncio.run(post_all(stack.url, ids("rmq-after", 30), 10, after))
    after.assert_all_answered(stack)
    # What was refused can be sent again and is then answered.
    again = Tally()
    asyncio.run(post_all(stack.url, [job for job in tally.answers if job not in accepted], 10, again))
    again.assert_all_answered(stack)
    # The background responses survived it: each answered, once.
    for n, response_id in enumerate(responses):
        wait_until(lambda r=response_id: sdk.responses.retrieve(r).status == "completed", 60, f"response {n}")
        assert sdk.responses.retrieve(response_id).output_text == f"echo: bg {n}"
    assert sum(c["messages"][-1]["content"].startswith("bg ") for c in fake.completions) == 3


# 3. Redis restarted under load.


def test_redis_restart_loses_no_accepted_job(
    make_stack: StackFactory, fake: FakeModelServer, broker_env: dict[str, str], tmp_path: Path
) -> None:
    server = RedisServer(redis_binary(broker_env), tmp_path / "redis").start()
    try:
        stack = make_stack(workers=1, concurrency=16, REDIS_HOST="127.0.0.1", REDIS_PORT=str(server.port))
        fake.latency = 0.2
        during: dict[str, tuple[int, str, float]] = {}

        def restart() -> None:
            wait_until(lambda: len(fake.completions) >= 20, 30, "jobs to run")
            server.stop()
            started = time.monotonic()
            answer = httpx.post(f"{stack.url}/generate", json={"job_id": "while-down", "content": "x"}, timeout=30)
            during["while-down"] = (answer.status_code, answer.json()["detail"], time.monotonic() - started)
            time.sleep(2)
            server.start()

        tally = under_load(stack.url, ids("redis", 200), 32, restart)
        refused = {job for job, a in tally.answers.items() if refused_by_store(a)}
        tally.report("Redis restart", fake, refused_during_outage=len(refused))
        Tally({j: a for j, a in tally.answers.items() if j not in refused}).assert_all_answered(stack)
        status, detail, seconds = during["while-down"]
        assert status == 503 and "Redis" in detail and seconds < 10, detail
        again = Tally()
        asyncio.run(post_all(stack.url, [*refused, *ids("redis-after", 30)], 10, again))
        again.assert_all_answered(stack)
    finally:
        server.stop()


def test_a_redis_that_comes_back_empty_leaves_no_request_waiting(
    make_stack: StackFactory, fake: FakeModelServer, broker_env: dict[str, str], tmp_path: Path
) -> None:
    # Redis restarted without persistence: the claims (and their reply_to), the queued
    # set, leases and results stored so far are gone; on a Redis broker, the queued
    # messages too. Every request still waiting must get its answer, without resending,
    # well before WAIT_TIMEOUT (a request that hears nothing gets 504 at that point).
    server = RedisServer(redis_binary(broker_env), tmp_path / "redis", persist=False).start()
    try:
        stack = make_stack(
            workers=1, concurrency=16, REDIS_HOST="127.0.0.1", REDIS_PORT=str(server.port), WAIT_TIMEOUT="60"
        )
        # Far more requests waiting than worker slots: most jobs run after Redis is back.
        fake.latency = 0.5
        emptied = {}

        def restart_empty() -> None:
            wait_until(lambda: len(fake.completions) >= 40, 30, "jobs to run")
            redis.Redis(port=server.port).set("test-marker", "before the restart")
            server.stop()
            time.sleep(2)
            server.start()
            # Counting its keys raced the API and workers, which write again at once.
            emptied["marker"] = redis.Redis(port=server.port).get("test-marker")

        tally = under_load(stack.url, ids("empty", 400), 128, restart_empty)
        refused = {job for job, a in tally.answers.items() if refused_by_store(a)}
        tally.report("Redis back empty", fake, refused_during_outage=len(refused))
        assert emptied["marker"] is None  # it did come back empty
        Tally({j: a for j, a in tally.answers.items() if j not in refused}).assert_all_answered(stack, stored=False)
        assert len(refused) < 200
    finally:
        server.stop()


# 4. The model server down, failing, slow; 6. dead letters.


def test_model_server_outage_is_retried_through(make_stack: StackFactory, fake: FakeModelServer) -> None:
    stack = make_stack(workers=1, concurrency=16, LLM_MAX_RETRIES="8", LLM_RETRY_BACKOFF="0.3")
    fake.latency = 0.1

    def outage() -> None:
        wait_until(lambda: len(fake.completions) >= 20, 30, "jobs to run")
        fake.stop()
        time.sleep(2)
        fake.start()

    tally = under_load(stack.url, ids("outage", 150), 24, outage)
    tally.report("model server down 2 s", fake)
    tally.assert_all_answered(stack)


def test_failing_answers_are_retried_and_bad_requests_are_not(stack: Stack, fake: FakeModelServer) -> None:
    fake.failures = [Failure(429, {"error": "busy"}, {"Retry-After": "0.2"}), Failure(500, {"error": "oops"})]
    answer = httpx.post(f"{stack.url}/generate", json={"content": "q busy"}, timeout=30)
    assert answer.status_code == 200 and len(fake.completions) == 3
    fake.failures = [Failure(400, {"error": {"message": "bad max_tokens"}})] * 3
    answer = httpx.post(f"{stack.url}/generate", json={"job_id": "bad-400", "content": "q bad"}, timeout=30)
    assert answer.status_code == 400 and "bad max_tokens" in answer.json()["detail"]
    assert len(fake.completions) == 4  # refused at once, not retried
    # The caller's own error: not kept as a dead letter.
    assert "bad-400" not in {entry["job_id"] for entry in dead_letters.list_dead(stack.config, None)}


def test_the_deadline_bounds_a_job_on_a_slow_model_server(make_stack: StackFactory, fake: FakeModelServer) -> None:
    stack = make_stack(LLM_DEADLINE="1")
    fake.chunk_delay = 0.1
    fake.extra_words = 40  # about 4 s of answer
    started = time.monotonic()
    answer = httpx.post(f"{stack.url}/generate", json={"content": "long"}, timeout=30)
    assert answer.status_code == 504 and "LLM_DEADLINE" in answer.json()["detail"]
    assert time.monotonic() - started < 3


def test_jobs_failed_by_an_outage_are_dead_lettered_and_replayed(
    make_stack: StackFactory, fake: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = make_stack(workers=1, LLM_MAX_RETRIES="1")
    for name, value in stack.env.items():
        monkeypatch.setenv(name, value)
    fake.stop()
    try:
        failed = Tally()
        asyncio.run(post_all(stack.url, ids("dead", 5), 5, failed))
    finally:
        fake.start()
    assert failed.statuses() == Counter({502: 5})
    detail = failed.answers["dead-0"].json()["detail"]  # type: ignore[union-attr]
    assert "model server unreachable" in detail and "gave up after 2 attempts" in detail
    config = stack.config
    wait_until(lambda: len(dead_letters.list_dead(config)) == 5, 10, "5 dead letters")
    listed = dead_letters.list_dead(config)
    assert {entry["job_id"] for entry in listed} == set(ids("dead", 5))
    assert all("ModelServerUnavailable" in entry["reason"] and entry["task"] == "llm.generate" for entry in listed)
    assert len(dead_letters.list_dead(config)) == 5  # listing keeps them

    # Replay one by name with the command line, then the rest.
    command = [sys.executable, "-m", "tasks.dead_letters", "replay", "dead-0"]
    run = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, **stack.env}, cwd=ROOT, check=False
    )
    assert run.returncode == 0, run.stderr
    assert "replayed 1 job(s): dead-0" in run.stdout
    assert sorted(dead_letters.replay(config, None).replayed) == sorted(ids("dead", 5)[1:])
    wait_until(lambda: all(job_status(stack, job) == "succeeded" for job in ids("dead", 5)), 20, "replayed jobs to run")
    assert dead_letters.list_dead(config) == []
    # Replayed under its claim (kept in its failure, its hash again): another body is refused.
    other = httpx.post(f"{stack.url}/generate", json={"job_id": "dead-3", "content": "other"}, timeout=30)
    assert other.status_code == 409
    resumed = httpx.post(f"{stack.url}/generate", json={"job_id": "dead-3", "content": "q dead-3"}, timeout=30)
    assert resumed.status_code == 200 and resumed.json()["content"] == "echo: q dead-3"


def test_an_answered_job_is_never_dead_lettered_nor_replayed(
    make_stack: StackFactory, fake: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = make_stack(workers=1, LLM_MAX_RETRIES="1")
    config = stack.config
    for name, value in stack.env.items():
        monkeypatch.setenv(name, value)
    store = redis.Redis.from_url(config.redis_url)
    answered = httpx.post(f"{stack.url}/generate", json={"job_id": "twin", "content": "q twin"}, timeout=30)
    assert answered.status_code == 200
    other_run = store.get(config.keys.result("twin"))

    # A worker fails a job that another run answered meanwhile (as a worker cut off
    # from the network does): its failure is dropped, not dead-lettered.
    fake.latency = 1.0
    fake.failures = [Failure(500, {"error": "down"})] * 2
    assert httpx.post(f"{stack.url}/generate?wait=0", json={"job_id": "late", "content": "q late"}).status_code == 202
    wait_until(lambda: len(fake.completions) >= 2, 10, "the job to be running")
    assert store.eval(STORE_ONCE, 2, config.keys.result("late"), config.keys.job("late"), other_run, 60, "") == 1
    worker = stack.processes.started[0]
    wait_until(lambda: "failure dropped, not dead-lettered" in worker.output(), 15, "the failure to be dropped")
    assert "late" in worker.output().split("failure dropped")[0].rsplit("\n", 1)[-1]
    assert dead_letters.list_dead(config) == []
    assert httpx.get(f"{stack.url}/jobs/late", timeout=10).json()["status"] == "succeeded"

    # A dead job answered since (a dead letter kept before the answer landed): replay
    # names it, skips it, and leaves its answer.
    fake.latency = 0
    fake.failures = [Failure(500, {"error": "down"})] * 2
    failed = httpx.post(f"{stack.url}/generate", json={"job_id": "stale", "content": "q stale"}, timeout=30)
    assert failed.status_code == 502
    wait_until(lambda: [e["job_id"] for e in dead_letters.list_dead(config)] == ["stale"], 10, "the dead letter")
    store.set(config.keys.result("stale"), other_run, ex=60)
    calls = len(fake.completions)
    run = subprocess.run(
        [sys.executable, "-m", "tasks.dead_letters", "replay", "--all"],
        capture_output=True, text=True, env={**os.environ, **stack.env}, cwd=ROOT, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "replayed 0 job(s)" in run.stdout and "skipped stale: answered since it failed" in run.stdout
    assert dead_letters.list_dead(config) == []
    time.sleep(1)  # a replayed job would have run by now
    assert len(fake.completions) == calls and store.get(config.keys.result("stale")) == other_run


def test_messages_no_worker_can_process_are_dead_lettered(make_stack: StackFactory, fake: FakeModelServer) -> None:
    stack = make_stack(workers=1, api=False)
    config = stack.config
    main = celery_settings(config)["task_queues"][0]
    with Connection(config.broker_url, transport_options=celery_settings(config)["broker_transport_options"]) as conn:
        producer = conn.Producer()
        producer.publish(
            b"{not json",
            routing_key=main.routing_key,
            exchange=main.exchange,
            declare=[main],
            content_type="application/json",
            content_encoding="utf-8",
        )
        producer.publish(
            json.dumps([[{"content": "x"}], {}, {}]).encode(),
            routing_key=main.routing_key,
            exchange=main.exchange,
            declare=[main],
            content_type="application/json",
            content_encoding="utf-8",
            headers={"id": "no-such-task-1", "task": "llm.no_such_task", "lang": "py"},
        )
    wait_until(lambda: len(dead_letters.list_dead(config)) == 2, 20, "2 dead letters")
    reasons = sorted(entry["reason"] for entry in dead_letters.list_dead(config))
    assert reasons[0].startswith(("could not decode", "not a task message")), reasons
    assert reasons[1].startswith("no such task"), reasons
    assert stack.processes.started[0].popen.poll() is None
    assert dead_letters.purge(config) == 2
    assert fake.completions == []


# 5. A job longer than RabbitMQ's consumer timeout.


@pytest.mark.alone
def test_a_job_longer_than_the_consumer_timeout_runs_once(
    make_stack: StackFactory, fake: FakeModelServer, broker_env: dict[str, str]
) -> None:
    if not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("RabbitMQ only: for a Redis broker, see the next test")
    found = rabbitmqctl(
        "eval", "{application:get_env(rabbit, consumer_timeout), application:get_env(rabbit, channel_tick_interval)}."
    )
    timeout, tick = (int(n) for n in re.findall(r"\{ok,(\d+)\}", found))
    # This server's consumers time out after 2 s (checked each second) instead of 30 min.
    _set_rabbit_env(consumer_timeout=2000, channel_tick_interval=1000)
    try:
        stack = make_stack(workers=1, JOB_LEASE="3")
        fake.latency = 7
        answer = httpx.post(f"{stack.url}/generate", json={"content": "q long"}, timeout=60)
    finally:
        _set_rabbit_env(consumer_timeout=timeout, channel_tick_interval=tick)
    worker = stack.processes.started[0]
    print(
        f"\n[consumer timeout] status={answer.status_code} model_calls={len(fake.completions)}"
        f" redelivered={'running elsewhere' in worker.output()}"
    )
    assert answer.status_code == 200 and answer.json()["content"] == "echo: q long"
    assert len(fake.completions) == 1  # handed out again (this RabbitMQ ignores the consumer argument), not rerun
    assert worker.popen.poll() is None


def test_a_job_longer_than_the_visibility_timeout_is_not_handed_out_again(
    make_stack: StackFactory, fake: FakeModelServer, broker_env: dict[str, str]
) -> None:
    if broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("Redis broker only")
    # Visibility timeout 3 s, a 7 s job, a second worker waiting for work: the running
    # worker renews the message it holds, so it is never handed out to the other.
    stack = make_stack(workers=2, JOB_LEASE="3")
    fake.latency = 7
    answer = httpx.post(f"{stack.url}/generate", json={"content": "q long"}, timeout=60)
    outputs = " ".join(process.output() for process in stack.processes.started)
    print(f"\n[visibility timeout] status={answer.status_code} model_calls={len(fake.completions)}")
    assert answer.status_code == 200 and answer.json()["content"] == "echo: q long"
    assert len(fake.completions) == 1
    # A second delivery would have met the lease ("running elsewhere") or the answer.
    assert "running elsewhere" not in outputs and "already answered" not in outputs
    assert outputs.count('"job done"') == 1


def test_a_message_lost_between_the_broker_and_a_killed_worker_is_queued_again(
    make_stack: StackFactory, fake: FakeModelServer, broker_env: dict[str, str]
) -> None:
    if broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("Redis broker only: RabbitMQ hands a dead consumer's messages out again")
    # Kombu's Redis transport pops a message, then records it as unacknowledged: a worker
    # killed between the two takes the message with it. Popped here by the test, as that
    # worker would have; the API notices the job unstarted, its queue empty, and no
    # worker holding it, and queues it again.
    stack = make_stack(workers=0, JOB_LEASE="3")
    config = stack.config
    store = redis.Redis(host=config.redis_host, port=config.redis_port)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(
            httpx.post, f"{stack.url}/generate", json={"job_id": "lost-1", "content": "in transit"}, timeout=60
        )

        wait_until(lambda: bool(queued_lists(store, config)), 10, "the job's message in its queue")
        assert b'"lost-1"' in store.rpop(queued_lists(store, config)[0])
        stack.processes.worker(stack.env)
        answer = waiting.result(60)
    api_log = stack.processes.started[0].output()
    print(f"\n[message lost in transit] status={answer.status_code} model_calls={len(fake.completions)}")
    assert answer.status_code == 200 and answer.json()["content"] == "echo: in transit"
    assert len(fake.completions) == 1
    assert "its message was lost between the broker and a worker" in api_log


def test_lost_messages_of_jobs_queued_without_waiting_are_queued_again(
    make_stack: StackFactory, fake: FakeModelServer, broker_env: dict[str, str]
) -> None:
    if broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("Redis broker only: RabbitMQ hands a dead consumer's messages out again")
    # As above, for jobs nobody awaits (wait=0): one whose message is lost before it
    # started, and one started by a worker that lost it (its lease lapsed, no result,
    # its message nowhere): the API that queued them queues them again.
    stack = make_stack(workers=0, JOB_LEASE="3")
    config = stack.config
    store = redis.Redis(host=config.redis_host, port=config.redis_port)

    for job_id in ("lost-queued", "lost-running"):
        assert httpx.post(f"{stack.url}/generate?wait=0", json={"job_id": job_id, "content": job_id}).status_code == 202
        wait_until(lambda: bool(queued_lists(store, config)), 10, "the job's message in its queue")
        assert job_id.encode() in store.rpop(queued_lists(store, config)[0])
    # Started by a worker that then vanished with its message: started, no lease, no result.
    store.hset(config.keys.job("lost-running"), "started_at", time.time())
    stack.processes.worker(stack.env)
    for job_id in ("lost-queued", "lost-running"):
        wait_until(lambda j=job_id: httpx.get(f"{stack.url}/jobs/{j}").json()["status"] == "succeeded", 30, job_id)
    assert sorted(c["messages"][-1]["content"] for c in fake.completions) == ["lost-queued", "lost-running"]


def queued_lists(store: redis.Redis, config: Config) -> list[bytes]:
    """A Redis broker's lists of the stack's queue (one per priority) that hold a message."""
    found = store.scan_iter(f"{config.key_prefix}{config.queue_name}*")
    return [key for key in found if store.type(key) == b"list" and store.llen(key)]


def _set_rabbit_env(**values: int) -> None:
    rabbitmqctl("eval", ", ".join(f"application:set_env(rabbit, {k}, {v})" for k, v in values.items()) + ".")


# 7. Graceful shutdown.


def test_sigterm_lets_a_workers_running_jobs_finish(make_stack: StackFactory, fake: FakeModelServer) -> None:
    stack = make_stack(workers=1, concurrency=16, WORKER_SHUTDOWN_GRACE="20")
    worker = stack.processes.started[0]
    fake.latency = 2

    def terminate() -> None:
        wait_until(lambda: fake.in_flight >= 10, 20, "jobs running")
        worker.popen.send_signal(signal.SIGTERM)
        worker.popen.wait(30)

    tally = under_load(stack.url, ids("term", 10), 10, terminate)
    tally.report("worker SIGTERM", fake)
    tally.assert_all_answered(stack)
    assert len(fake.completions) == 10 and worker.popen.returncode == 0


def test_sigterm_hands_back_jobs_that_cannot_finish_in_the_grace_period(
    make_stack: StackFactory, fake: FakeModelServer
) -> None:
    stack = make_stack(workers=1, WORKER_SHUTDOWN_GRACE="1", JOB_LEASE="3")
    worker = stack.processes.started[0]
    fake.latency = 4

    def terminate_then_replace() -> None:
        wait_until(lambda: fake.in_flight >= 3, 20, "jobs running")
        worker.popen.send_signal(signal.SIGTERM)
        worker.popen.wait(30)
        stack.processes.worker(stack.env, name="replacement")

    tally = under_load(stack.url, ids("handback", 3), 3, terminate_then_replace)
    tally.report("worker SIGTERM past its grace", fake)
    tally.assert_all_answered(stack)
    assert len(fake.completions) == 6  # each begun on the first worker, then run on the second


def test_sigterm_lets_the_api_answer_requests_in_flight(make_stack: StackFactory, fake: FakeModelServer) -> None:
    stack = make_stack(workers=1)
    api = stack.processes.started[-1]
    fake.latency = 1.5

    def terminate() -> None:
        wait_until(lambda: fake.in_flight >= 10, 20, "jobs running")
        api.popen.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        with pytest.raises(httpx.ConnectError):  # no longer taking requests
            httpx.post(f"{stack.url}/generate", json={"content": "late"}, timeout=5)

    tally = under_load(stack.url, ids("api-term", 10), 10, terminate)
    tally.report("API SIGTERM", fake)
    # uvicorn exits by the signal it was sent, once it has shut down gracefully.
    assert api.popen.wait(15) in (0, -signal.SIGTERM)
    assert tally.statuses() == Counter({200: 10})
    assert all(is_answer(a, job) for job, a in tally.answers.items())


# 8. A worker cut off from the network (its process alive, every packet it sends lost).

PARTITION_GROUP = 47151  # the cut-off worker runs in this group alone; iptables drops its packets
PARTITION_TAG = "llm-gateway-test-partition"
PARTITION_MARK = "0x4715"


def _iptables(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["iptables", "-w", "5", *args], capture_output=True, text=True, check=False)


def _require_iptables() -> None:
    missing = None
    if os.geteuid() != 0:
        missing = "needs root"
    elif shutil.which("iptables") is None:
        missing = "needs iptables (apt-get install iptables; .ci/run installs it)"
    elif _iptables("-S", "OUTPUT").returncode != 0:
        missing = f"iptables does not work here: {_iptables('-S', 'OUTPUT').stderr.strip()}"
    if missing:
        if os.environ.get("REQUIRE_RABBITMQ"):  # set by .ci/run: CI must run every fault
            pytest.fail(f"the partition test {missing}")
        pytest.skip(f"the partition test {missing}")


def _remove_partition_rules() -> None:
    """Every rule this test adds, including those left by a run that was killed."""
    for chain in ("OUTPUT", "INPUT"):
        for line in _iptables("-S", chain).stdout.splitlines():
            if PARTITION_TAG in line and line.startswith("-A "):
                _iptables("-D", *line.split()[1:])


@contextmanager
def marked(group: int) -> Iterator[None]:
    """Mark every connection the processes of `group` open, so that `cut_off` can
    drop the packets coming to them as well as those they send."""
    _remove_partition_rules()
    owner = ["-m", "owner", "--gid-owner", str(group), "-m", "comment", "--comment", PARTITION_TAG]
    added = _iptables("-A", "OUTPUT", *owner, "-j", "CONNMARK", "--set-mark", PARTITION_MARK)
    assert added.returncode == 0, added.stderr
    try:
        yield
    finally:
        _remove_partition_rules()
        left = _iptables("-S", "OUTPUT").stdout + _iptables("-S", "INPUT").stdout
        assert PARTITION_TAG not in left


@contextmanager
def cut_off(group: int) -> Iterator[None]:
    """Inside `marked(group)`: drop every packet the processes of `group` send or are
    sent, until the block ends (their connections stay open, silent, as over a dead link)."""
    tag = ["-m", "comment", "--comment", PARTITION_TAG, "-j", "DROP"]
    rules = [
        ["OUTPUT", "-m", "owner", "--gid-owner", str(group), *tag],
        ["INPUT", "-m", "connmark", "--mark", PARTITION_MARK, *tag],
    ]
    try:
        for rule in rules:
            added = _iptables("-I", *rule)
            assert added.returncode == 0, added.stderr
        yield
    finally:
        for rule in rules:
            _iptables("-D", *rule)


def _jobs_running(stack: Stack) -> int | None:
    """Jobs the stack's workers still hold (Celery's `inspect active`), or None until all answer.

    Asked of the stack's workers by name: the tests running beside it have workers on the
    same RabbitMQ virtual host, and a broadcast reaches theirs too."""
    names = [match.group(1) for process in stack.processes.started if process.name != "api"
             for match in [re.search(r"([\w.-]+@[\w.-]+) ready\.", process.output())] if match]  # fmt: skip
    command = [sys.executable, "-m", "celery", "-A", "tasks.app", "inspect", "active", "--json", "-t", "3"]
    command += ["-d", ",".join(names)]
    run = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, **stack.env}, cwd=ROOT, check=False
    )
    try:
        replies = json.loads(run.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None
    return sum(len(jobs) for jobs in replies.values()) if set(replies) == set(names) else None


# Its rules drop the packets of one group's processes only, so other tests run beside it;
# but never itself beside itself (each run removes every rule it finds): one xdist group.
@pytest.mark.xdist_group("partition")
def test_a_worker_cut_off_from_the_network_answers_each_job_once_and_dead_letters_none(
    make_stack: StackFactory, fake: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    _require_iptables()
    with marked(PARTITION_GROUP):
        _cut_off_worker(make_stack, fake, monkeypatch)


def _cut_off_worker(make_stack: StackFactory, fake: FakeModelServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # Cut for longer than RabbitMQ takes to find the connection dead (two heartbeats
    # missed), with time left for the other worker to answer the jobs handed back.
    heartbeat, cut_seconds = 5, 25
    stack = make_stack(
        workers=1,
        concurrency=8,
        BROKER_HEARTBEAT=str(heartbeat),
        JOB_LEASE="5",
        LLM_TIMEOUT="5",
        LLM_CONNECT_TIMEOUT="2",
        LLM_MAX_RETRIES="3",
        LLM_DEADLINE="12",
        WAIT_TIMEOUT="120",
    )
    cut = stack.processes.worker(stack.env, name="cutoff", concurrency=8, group=PARTITION_GROUP)
    for name, value in stack.env.items():
        monkeypatch.setenv(name, value)
    config = stack.config
    fake.latency = 0.5
    times: dict[str, float] = {}

    def partition() -> None:
        wait_until(lambda: len(fake.completions) >= 40, 30, "jobs to run on both workers")
        with cut_off(PARTITION_GROUP):
            times["cut"] = time.monotonic()
            time.sleep(cut_seconds)
        times["restored"] = time.monotonic()

    jobs = ids("cut", 240)
    tally = under_load(stack.url, jobs, 32, partition)
    last = max(tally.finished.values())
    # The cut-off worker settles the jobs it held once the link returns: wait for it.
    wait_until(lambda: _jobs_running(stack) == 0, 120, "both workers to be idle")
    dropped = cut.output().count("failure dropped, not dead-lettered")
    tally.report(
        "worker cut off",
        fake,
        cut_s=cut_seconds,
        last_answer_after_cut_s=round(last - times["cut"], 1),
        late_failures_dropped=dropped,
    )
    tally.assert_all_answered(stack)
    # The jobs the cut-off worker held were answered by the other one while the cut lasted.
    late = [job for job, at in tally.finished.items() if at >= times["restored"]]
    assert not late, f"{len(late)} jobs answered only once the link returned: {late[:5]}"
    dead = {entry["job_id"] for entry in dead_letters.list_dead(config, None)}
    assert not dead & set(jobs), f"answered jobs dead-lettered: {sorted(dead & set(jobs))[:5]}"

    # Replay changes no answer and calls the model server for nothing.
    store = redis.Redis.from_url(config.redis_url)
    before = store.mget([config.keys.result(job) for job in jobs])
    calls = len(fake.completions)
    dead_letters.replay(config, None)
    time.sleep(2)
    assert store.mget([config.keys.result(job) for job in jobs]) == before
    assert len(fake.completions) == calls
