"""Batch lines: an API process runs at most BATCH_LINES_IN_FLIGHT lines of a model at
once, over all its batches (api/openai/batches/scheduling.py). Those slots go to tenants in
turns, so a tenant that creates many batches does not hold back another's one."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import httpx
import openai
import pytest

from testing.fake_model_server import FakeModelServer
from testing.openai_sdk import chat_line, upload, wait_until_finished
from tests.conftest import StackFactory

pytestmark = pytest.mark.integration

TENANTS = """
tenants:
  - name: alpha
    keys: ["key-alpha"]
  - name: beta
    keys: ["key-beta"]
"""
BATCHES, LINES = 4, 20  # alpha's: 80 lines, 2 at a time
BETA_LINES = 6


def started(fake: FakeModelServer) -> list[str]:
    """The lines' contents, in the order the model server was asked."""
    return [body["messages"][-1]["content"] for body in fake.completions]


def test_hostile_tenants_many_batches_beside_a_normal_tenants_one_take_the_lines_slots_in_turns(
    make_stack: StackFactory, fake: FakeModelServer, broker_env: dict[str, str], tmp_path: Path
) -> None:
    if not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("once is enough: which line is sent next is the API process's doing, not the broker's")
    keys = tmp_path / "tenants.yaml"
    keys.write_text(TENANTS)
    stack = make_stack(API_KEYS_FILE=str(keys), BATCH_LINES_IN_FLIGHT="2", concurrency=4)
    fake.latency = 0.05

    def sdk(key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{stack.url}/v1", api_key=key, max_retries=0)

    alpha, beta = sdk("key-alpha"), sdk("key-beta")
    alphas = []
    for b in range(BATCHES):
        file_id = upload(alpha, [chat_line(f"{n}", f"alpha-{b}-{n}") for n in range(LINES)])
        alphas.append(alpha.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                                           completion_window="24h").id)  # fmt: skip
    # Beta's batch comes once every batch of alpha's runs its lines.
    deadline = time.monotonic() + 30
    while len({job.rsplit("-", 1)[0] for job in started(fake)}) < BATCHES and time.monotonic() < deadline:
        time.sleep(0.05)
    file_id = upload(beta, [chat_line(f"{n}", f"beta-{n}") for n in range(BETA_LINES)])
    batch = beta.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
    assert wait_until_finished(beta, batch.id).status == "completed"
    # Beta's lines had every other slot: between its first line and its last, about as
    # many of alpha's ran as its own. In one line of waiters, each of alpha's batches
    # took a turn to each of beta's: four of alpha's lines a line of beta's.
    order = started(fake)
    betas = [n for n, job in enumerate(order) if job.startswith("beta-")]
    assert len(betas) == BETA_LINES
    between = [job for job in order[betas[0] : betas[-1]] if job.startswith("alpha-")]
    assert len(between) <= BETA_LINES + 2, order
    assert all(wait_until_finished(alpha, batch_id).status == "completed" for batch_id in alphas)
    assert len(fake.completions) == BATCHES * LINES + BETA_LINES


@pytest.mark.parametrize("awaited", [True, False], ids=["awaited", "queued-without-waiting"])
def test_a_normal_tenants_request_beside_a_hostile_tenants_batch_starts_before_the_batch_has_run(
    make_stack: StackFactory, fake: FakeModelServer, broker_env: dict[str, str], tmp_path: Path, awaited: bool
) -> None:
    """Beta's batch fills the model's queue with lines; alpha's request, awaited by the
    API process driving it or waiting in alpha's queue of the contended model (sent with
    `wait=0`), has the lines step back to BATCH_LINES_BESIDE_INTERACTIVE, and starts
    after those already queued, not after the batch."""
    if not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("once is enough: which line is sent next is the API process's doing, not the broker's")
    keys = tmp_path / "tenants.yaml"
    keys.write_text(TENANTS)
    stack = make_stack(API_KEYS_FILE=str(keys), concurrency=2)
    fake.latency = 0.05
    beta = openai.OpenAI(base_url=f"{stack.url}/v1", api_key="key-beta", max_retries=0)
    lines = 400
    file_id = upload(beta, [chat_line(f"{n}", f"beta-{n}") for n in range(lines)])
    batch = beta.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
    deadline = time.monotonic() + 30
    while len(fake.completions) < 40 and time.monotonic() < deadline:
        time.sleep(0.05)
    sent = len(fake.completions)
    alpha = {"Authorization": "Bearer key-alpha"}
    body = {"content": "alpha-1", "job_id": "alpha-1"}
    answer = httpx.post(f"{stack.url}/generate?wait={60 if awaited else 0}", json=body, headers=alpha, timeout=90)
    assert answer.status_code == (200 if awaited else 202), answer.text
    deadline = time.monotonic() + 90
    while not awaited and time.monotonic() < deadline:
        status = httpx.get(f"{stack.url}/jobs/alpha-1", headers=alpha, timeout=10).json()["status"]
        if status == "succeeded":
            break
        time.sleep(0.1)
    order = started(fake)
    # Ahead of it: the lines queued or running as it came (BATCH_LINES_IN_FLIGHT, 32),
    # not what was left of the batch's 400.
    ahead = [job for job in order[sent : order.index("alpha-1")] if job.startswith("beta-")]
    assert len(ahead) <= 48, len(ahead)
    assert wait_until_finished(beta, batch.id, timeout=120).status == "completed"


def test_hostile_tenant_beside_normal_runs_no_more_batches_at_once_than_its_quota(
    make_stack: StackFactory, fake: FakeModelServer, broker_env: dict[str, str], tmp_path: Path
) -> None:
    """Each batch driven is read whole into an API process's memory: one file made into
    many batches would take all of it. Beta's batches not finished are bounded by its
    quota batches_in_flight; alpha's are its own."""
    if not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("once is enough: batches are the API's and the file store's, not the broker's")
    keys = tmp_path / "tenants.yaml"
    keys.write_text(TENANTS.replace('["key-beta"]', '["key-beta"]\n    quotas:\n      batches_in_flight: 2'))
    stack = make_stack(API_KEYS_FILE=str(keys))
    fake.latency = 2.0  # the batches run while more are asked for

    def sdk(key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{stack.url}/v1", api_key=key, max_retries=0)

    alpha, beta = sdk("key-alpha"), sdk("key-beta")
    lines = [chat_line(f"{n}", f"line-{n}") for n in range(20)]
    beta_file, alpha_file = upload(beta, lines), upload(alpha, lines)

    def create(client: openai.OpenAI, file_id: str) -> openai.types.Batch:
        return client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")

    running = [create(beta, beta_file) for _ in range(2)]
    with pytest.raises(openai.RateLimitError) as refused:
        create(beta, beta_file)
    assert "quota batches_in_flight: tenant 'beta' has 2 batches not finished, at most 2" in str(refused.value)
    alphas = [create(alpha, alpha_file) for _ in range(3)]
    # A batch that ended gives its place back.
    beta.batches.cancel(running[0].id)
    assert wait_until_finished(beta, running[0].id).status == "cancelled"
    running.append(create(beta, beta_file))
    for client, batch in [*((beta, b) for b in running[1:]), *((alpha, b) for b in alphas)]:
        with contextlib.suppress(openai.ConflictError):  # finished already
            client.batches.cancel(batch.id)
