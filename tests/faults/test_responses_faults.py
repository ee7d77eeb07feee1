"""A background response survives what a job survives: a worker killed
(tests/faults/test_resume.py), RabbitMQ restarted (its message is durable), and Redis
back empty: its record travels with its job, and the worker that runs it writes it
again, so the response is found and answered once its job is."""

from __future__ import annotations

import time
from pathlib import Path

import openai
import pytest

from testing.fake_model_server import FakeModelServer
from testing.load import redis_binary, wait_until
from testing.processes import RedisServer
from tests.conftest import StackFactory

pytestmark = pytest.mark.fault


def _status(sdk: openai.OpenAI, response_id: str) -> str:
    try:
        return sdk.responses.retrieve(response_id).status or ""
    except openai.NotFoundError:
        return "not found"


def test_background_responses_queued_when_redis_came_back_empty_are_answered(
    make_stack: StackFactory, fake: FakeModelServer, broker_env: dict[str, str], tmp_path: Path
) -> None:
    if not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("RabbitMQ only: on a Redis broker, Redis back empty loses the queued messages too")
    server = RedisServer(redis_binary(broker_env), tmp_path / "redis", persist=False).start()
    try:
        stack = make_stack(workers=0, REDIS_HOST="127.0.0.1", REDIS_PORT=str(server.port))
        sdk = openai.OpenAI(base_url=f"{stack.url}/v1", api_key="unused", max_retries=0, timeout=30,
                            _strict_response_validation=True)  # fmt: skip
        made = [
            sdk.responses.create(model="fake-model", input=f"question {n}", instructions="Be brief.", background=True)
            for n in range(3)
        ]
        assert {_status(sdk, r.id) for r in made} == {"queued"}
        server.stop()
        server.start()  # empty: no record, no claim, no queued set
        # Each record is also in the file store: the responses are still found, queued.
        assert {_status(sdk, r.id) for r in made} == {"queued"}
        stack.processes.worker(stack.env)
        for n, response in enumerate(made):
            wait_until(lambda r=response: _status(sdk, r.id) == "completed", 30, f"response {n}")
            done = sdk.responses.retrieve(response.id)
            assert done.output_text == f"echo: question {n}" and done.instructions == "Be brief."
            assert [i.content[0].text for i in sdk.responses.input_items.list(response.id).data] == [f"question {n}"]
        assert len(fake.completions) == 3
    finally:
        server.stop()


def test_a_deleted_background_response_is_not_run_again(
    make_stack: StackFactory, fake: FakeModelServer, broker_env: dict[str, str]
) -> None:
    # On a Redis broker the API looks after the jobs it queued without waiting, in case
    # their message is lost: a response deleted (its claim, result and stream gone)
    # must not look lost to it, and be queued again.
    if broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("Redis broker only: its API looks after the jobs it queued")
    stack = make_stack(JOB_LEASE="3")
    sdk = openai.OpenAI(base_url=f"{stack.url}/v1", api_key="unused", max_retries=0, timeout=30)
    made = sdk.responses.create(model="fake-model", input="once", background=True)
    wait_until(lambda: _status(sdk, made.id) == "completed", 20, "the response")
    sdk.responses.delete(made.id)
    time.sleep(9)  # three of the API's sweeps for lost jobs (one a JOB_LEASE)
    assert [c["messages"][-1]["content"] for c in fake.completions] == ["once"]
