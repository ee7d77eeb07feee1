"""Faults injected in the middle of a batch: the API process driving it killed and
started again, a worker killed, RabbitMQ restarted, Redis restarted with nothing
kept. Each time the batch completes, every custom_id is in its output exactly once
with its own answer, and the model server was asked once per line (but for lines
running on a killed worker, which run again elsewhere)."""

from __future__ import annotations

import io
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import openai
import pytest
import redis

from testing.fake_model_server import FakeModelServer, fake_vector, free_port
from testing.load import rabbitmq_stopped, redis_binary, wait_until
from testing.openai_sdk import chat_line, client, file_lines, jsonl, wait_until_finished
from testing.processes import RedisServer
from tests.conftest import Stack, StackFactory

pytestmark = pytest.mark.fault

LINES = 240
BATCH_ENV = {"BATCH_POLL_SECONDS": "0.3", "BATCH_LINES_IN_FLIGHT": "16", "JOB_LEASE": "4"}


def run_batch_with(stack: Stack, fake: FakeModelServer, fault: Callable[[], None], lines: int = LINES) -> Counter[str]:
    """Run a batch of `lines` chat lines, calling `fault` once a sixth of them ran;
    check its files; return how often the model server was asked each line's prompt."""
    sdk = client(stack)
    requests = [chat_line(f"line-{n}", f"question {n}") for n in range(lines)]
    file_id = sdk.files.create(file=("in.jsonl", io.BytesIO(jsonl(requests))), purpose="batch").id
    batch = sdk.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
    wait_until(lambda: len(fake.completions) >= lines // 6, 60, "a sixth of the lines to run")
    fault()
    finished = wait_until_finished(client(stack), batch.id, timeout=180)
    assert finished.status == "completed", finished
    output = file_lines(client(stack), finished.output_file_id)
    assert file_lines(client(stack), finished.error_file_id) == []
    assert Counter(line["custom_id"] for line in output) == Counter(r["custom_id"] for r in requests)
    for line in output:
        number = line["custom_id"].removeprefix("line-")
        assert line["response"]["body"]["choices"][0]["message"]["content"] == f"echo: question {number}"
    assert finished.request_counts is not None and finished.request_counts.completed == lines
    asked = Counter(sent["messages"][-1]["content"] for sent in fake.completions)
    assert set(asked) == {f"question {n}" for n in range(lines)}
    print(f"\n{lines} lines; model server asked {sum(asked.values())} times")  # pytest -s shows it
    return asked


def test_a_batch_completes_across_a_killed_api(make_stack: StackFactory, fake: FakeModelServer) -> None:
    port = free_port()
    stack = make_stack(workers=1, api=False, concurrency=16, **BATCH_ENV)
    stack.url = f"http://127.0.0.1:{port}"
    api = stack.processes.api(stack.env, port)
    fake.latency = 0.1

    def kill_and_restart() -> None:
        api.popen.send_signal(signal.SIGKILL)
        api.popen.wait(5)
        stack.processes.api(stack.env, port)

    asked = run_batch_with(stack, fake, kill_and_restart)
    assert max(asked.values()) == 1  # the worker ran every line once, whatever the API did


def test_a_batch_completes_across_a_killed_worker(make_stack: StackFactory, fake: FakeModelServer) -> None:
    stack = make_stack(workers=0, **BATCH_ENV)
    stack.processes.worker(stack.env, name="survivor", concurrency=8)
    doomed = stack.processes.worker(stack.env, name="doomed", concurrency=8)
    fake.latency = 0.2
    asked = run_batch_with(stack, fake, lambda: doomed.popen.send_signal(signal.SIGKILL))
    # Only the lines running on the killed worker (at most its 8 slots) ran twice.
    assert sum(asked.values()) - LINES <= 8 and max(asked.values()) <= 2


def test_a_batch_of_embedding_lines_completes_across_a_killed_worker(
    make_stack: StackFactory, fake: FakeModelServer
) -> None:
    stack = make_stack(workers=0, EMBED_COALESCE_WAIT_MS="5", **BATCH_ENV)
    stack.processes.worker(stack.env, name="survivor", concurrency=8)
    doomed = stack.processes.worker(stack.env, name="doomed", concurrency=8)
    fake.embed_fixed = 0.05  # a call's own cost; the lines of a worker share calls
    sdk = client(stack)
    lines = [
        {"custom_id": f"line-{n}", "method": "POST", "url": "/v1/embeddings",
         "body": {"model": "fake-model", "input": [f"chunk {n}", f"chunk {n} b"]}}
        for n in range(LINES)
    ]  # fmt: skip
    file_id = sdk.files.create(file=("in.jsonl", io.BytesIO(jsonl(lines))), purpose="batch").id
    batch = sdk.batches.create(input_file_id=file_id, endpoint="/v1/embeddings", completion_window="24h")
    wait_until(lambda: sum(fake.embedding_calls) >= LINES // 3, 60, "a sixth of the lines to run")
    doomed.popen.send_signal(signal.SIGKILL)
    finished = wait_until_finished(client(stack), batch.id, timeout=180)
    assert finished.status == "completed" and finished.request_counts.completed == LINES, finished
    assert file_lines(client(stack), finished.error_file_id) == []
    output = {line["custom_id"]: line for line in file_lines(client(stack), finished.output_file_id)}
    assert sorted(output) == sorted(line["custom_id"] for line in lines)  # each once
    for custom_id, line in output.items():
        n = custom_id.removeprefix("line-")
        data = line["response"]["body"]["data"]
        assert [len(d["embedding"]) for d in data] == [8, 8]
        assert abs(data[1]["embedding"][0] - fake_vector(f"chunk {n} b", 8)[0]) < 1e-6
    # Joined: fewer calls than lines, though the killed worker's were made again.
    assert len(fake.embedding_calls) < LINES


@pytest.mark.alone
def test_a_batch_completes_across_a_rabbitmq_restart(
    make_stack: StackFactory, fake: FakeModelServer, broker_env: dict[str, str]
) -> None:
    if not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("RabbitMQ only")
    stack = make_stack(workers=1, concurrency=16, **BATCH_ENV)
    fake.latency = 0.1

    def restart() -> None:
        with rabbitmq_stopped():
            time.sleep(2)

    asked = run_batch_with(stack, fake, restart)
    assert max(asked.values()) == 1


def test_a_batch_completes_across_a_redis_that_comes_back_empty(
    make_stack: StackFactory, fake: FakeModelServer, broker_env: dict[str, str], tmp_path: Path
) -> None:
    server = RedisServer(redis_binary(broker_env), tmp_path / "redis", persist=False).start()
    try:
        stack = make_stack(workers=1, concurrency=16, REDIS_HOST="127.0.0.1", REDIS_PORT=str(server.port), **BATCH_ENV)
        fake.latency = 0.1

        def restart_empty() -> None:
            server.stop()
            time.sleep(2)
            server.start()

        asked = run_batch_with(stack, fake, restart_empty)
        # Lines whose result Redis lost were answered from their records, not asked again.
        assert max(asked.values()) == 1
    finally:
        server.stop()


@pytest.mark.alone
def test_a_cancel_during_a_broker_outage_still_stops_the_batch(
    make_stack: StackFactory, fake: FakeModelServer, broker_env: dict[str, str]
) -> None:
    if not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("RabbitMQ only")
    stack = make_stack(workers=1, concurrency=8, **BATCH_ENV)
    fake.latency = 0.2
    sdk = client(stack)
    requests = [chat_line(f"line-{n}", f"q {n}") for n in range(200)]
    file_id = sdk.files.create(file=("in.jsonl", io.BytesIO(jsonl(requests))), purpose="batch").id
    batch = sdk.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
    wait_until(lambda: len(fake.completions) >= 20, 60, "lines to run")
    cancelled = threading.Event()
    with rabbitmq_stopped():
        try:
            sdk.batches.cancel(batch.id)  # the file store and Redis are up: the stop mark is written
            cancelled.set()
        except openai.APIError:
            pass
    assert cancelled.is_set()
    finished = wait_until_finished(client(stack), batch.id, timeout=120)
    assert finished.status == "cancelled"
    output = file_lines(sdk, finished.output_file_id)
    errors = file_lines(sdk, finished.error_file_id)
    assert Counter(line["custom_id"] for line in output + errors) == Counter(r["custom_id"] for r in requests)
    assert len(fake.completions) < 200
    assert all(line["error"] and line["error"]["code"] == "batch_cancelled" for line in errors), [
        line for line in errors if not line["error"]
    ][:3]


def test_a_batch_line_whose_message_is_lost_is_queued_again(
    make_stack: StackFactory, fake: FakeModelServer, broker_env: dict[str, str]
) -> None:
    # On a Redis broker, Kombu's transport pops a message before it records it as held:
    # a worker killed between the two takes the message with it. Here the messages are
    # taken from the queue's lists by hand, before any worker runs: each line must be
    # queued again by the batch's driver, and run once.
    if broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("Redis broker only: RabbitMQ hands a dead consumer's messages out again")
    stack = make_stack(workers=0, **BATCH_ENV)
    config = stack.config
    store = redis.Redis(host=config.redis_host, port=config.redis_port)
    sdk = client(stack)
    requests = [chat_line(f"line-{n}", f"question {n}") for n in range(10)]
    file_id = sdk.files.create(file=("in.jsonl", io.BytesIO(jsonl(requests))), purpose="batch").id
    batch = sdk.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
    lists = f"{config.key_prefix}{config.queue_name}*"

    def queued() -> int:
        return sum(store.llen(key) for key in store.scan_iter(lists) if store.type(key) == b"list")

    wait_until(lambda: queued() == 10, 30, "the lines to be queued")
    for key in list(store.scan_iter(lists)):
        if store.type(key) == b"list":
            store.delete(key)
    stack.processes.worker(stack.env, concurrency=8)
    finished = wait_until_finished(sdk, batch.id, timeout=60)
    assert finished.status == "completed" and finished.request_counts is not None
    assert finished.request_counts.completed == 10
    assert Counter(sent["messages"][-1]["content"] for sent in fake.completions) == Counter(
        f"question {n}" for n in range(10)
    )
