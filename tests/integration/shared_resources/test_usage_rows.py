"""Usage rows: each UTC day's usage is one Redis hash of every tenant's rows, kept
USAGE_DAYS and read whole by every tenant's GET /usage. A row's model is a model of the
registry, never a name a request made up: with one model server any name reaches it,
and each name would be rows kept for a year."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
import redis

from testing.fake_model_server import FakeModelServer
from tests.conftest import StackFactory

pytestmark = pytest.mark.integration

TENANTS = """
tenants:
  - name: alpha
    keys: ["key-alpha"]
  - name: beta
    keys: ["key-beta"]
"""
NAMES = 20  # beta's made-up model names


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_hostile_tenants_made_up_model_names_add_no_rows_to_the_usage_every_tenant_reads(
    make_stack: StackFactory, fake: FakeModelServer, broker_env: dict[str, str], tmp_path: Path
) -> None:
    if not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("once is enough: what a row names is the worker's doing, not the broker's")
    keys = tmp_path / "tenants.yaml"
    keys.write_text(TENANTS)
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
