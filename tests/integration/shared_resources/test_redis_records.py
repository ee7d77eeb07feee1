"""Redis records, as whom: a request refused for one tenant's quota leaves nothing in
Redis (no response record, no claim, no stream), and another tenant's answers and bill
are its own."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
import redis

from testing.fake_model_server import FakeModelServer
from tests.conftest import Stack, StackFactory

pytestmark = pytest.mark.integration

TENANTS = """
tenants:
  - name: alpha
    keys: ["key-alpha"]
  - name: tiny
    keys: ["key-tiny"]
    quotas: {tokens_per_minute: 50, jobs_in_flight: 2}
  - name: ops
    admin: true
    keys: ["key-ops"]
"""

TWO_TENANTS = """
tenants:
  - name: alpha
    keys: ["key-alpha"]
  - name: beta
    keys: ["key-beta"]
"""
NAMES = 20  # beta's made-up model names


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def stack_keys(stack: Stack) -> set[bytes]:
    config = stack.config
    return set(redis.Redis.from_url(config.redis_url).scan_iter(match=f"{config.key_prefix}*", count=1000))


def test_hostile_tenant_beside_normal_leaves_no_record_of_its_refused_requests(
    make_stack: StackFactory, fake: FakeModelServer, broker_env: dict[str, str], tmp_path: Path
) -> None:
    if not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("once is enough: what a refusal stores is decided before the broker is reached")
    keys_file = tmp_path / "tenants.yaml"
    keys_file.write_text(TENANTS)
    stack = make_stack(workers=0, API_KEYS_FILE=str(keys_file))
    url = f"{stack.url}/v1/responses"
    # tiny fills its two places in flight with background responses (no worker yet).
    for n in range(2):
        made = httpx.post(url, json={"input": f"kept {n}", "background": True}, headers=auth("key-tiny"), timeout=30)
        assert made.status_code == 200 and made.json()["status"] == "queued", made.text
    before = stack_keys(stack)
    big = "word " * 40_000  # a large record, were it kept
    bodies = [{"input": big, "background": True}, {"input": big, "stream": True}, {"input": big}]
    for n in range(21):
        refused = httpx.post(url, json=bodies[n % 3], headers=auth("key-tiny"), timeout=30)
        assert refused.status_code == 429, refused.text
        assert "quota jobs_in_flight" in refused.json()["error"]["message"]
    after = stack_keys(stack)
    assert sorted(after - before) == []
    # alpha's requests, beside tiny's, are answered and billed for its own tokens alone.
    stack.processes.worker(stack.env)
    used = 0
    for n in range(3):
        answer = httpx.post(
            f"{stack.url}/v1/chat/completions", headers=auth("key-alpha"), timeout=60,
            json={"model": "fake-model", "messages": [{"role": "user", "content": f"alpha asks {n}"}]},
        )  # fmt: skip
        assert (
            answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"] == f"echo: alpha asks {n}"
        )
        used += answer.json()["usage"]["total_tokens"]
    days = httpx.get(f"{stack.url}/usage", headers=auth("key-alpha"), timeout=10).json()["data"]
    assert [(d["tenant"], d["jobs"], d["total_tokens"]) for d in days] == [("alpha", 3, used)]


def test_hostile_tenant_beside_normal_adds_no_usage_rows_by_made_up_model_names(
    make_stack: StackFactory, fake: FakeModelServer, broker_env: dict[str, str], tmp_path: Path
) -> None:
    if not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("once is enough: what a row names is the worker's doing, not the broker's")
    keys = tmp_path / "tenants.yaml"
    keys.write_text(TWO_TENANTS)
    stack = make_stack(API_KEYS_FILE=str(keys))
    for n in range(NAMES):
        body = {"model": f"made-up-{n}-" + "x" * 200, "messages": [{"role": "user", "content": "hi"}]}
        answer = httpx.post(f"{stack.url}/v1/chat/completions", json=body, headers=auth("key-beta"), timeout=60)
        assert answer.status_code == 200, answer.text
    body = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}
    alpha = httpx.post(f"{stack.url}/v1/chat/completions", json=body, headers=auth("key-alpha"), timeout=60)
    assert alpha.status_code == 200, alpha.text
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = httpx.get(f"{stack.url}/usage", headers=auth("key-beta"), timeout=10).json()["data"]
        if sum(row["jobs"] for row in rows) >= NAMES:
            break
        time.sleep(0.2)
    # Beta's jobs are counted, all of them, to the one model the gateway serves.
    assert [(row["model"], row["jobs"]) for row in rows] == [("default", NAMES)]
    (mine,) = httpx.get(f"{stack.url}/usage", headers=auth("key-alpha"), timeout=10).json()["data"]
    assert (mine["model"], mine["jobs"]) == ("default", 1)
    # And the day's hash holds one row per tenant: what every GET /usage reads.
    config = stack.config
    store = redis.Redis(config.redis_host, config.redis_port)
    try:
        fields = store.hkeys(config.keys.usage(time.strftime("%Y-%m-%d", time.gmtime())))
    finally:
        store.close()
    assert {field.decode().rsplit("|", 1)[0] for field in fields} == {"alpha|default", "beta|default"}
