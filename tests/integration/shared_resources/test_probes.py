"""The readiness probe, as whom: ``/ready`` is open to anyone, so what it costs must not
grow with who asks. It answers from checks made in the background: a keyless caller
asking a hundred times, fifty at once, keeps the gateway ready for its orchestrator,
sends no probe to the model server per call, learns no model or server name, and the
tenants' answers beside it are unchanged."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from testing.fake_model_server import FakeModelServer
from testing.load import wait_until
from tests.conftest import Stack, StackFactory

pytestmark = pytest.mark.integration

TENANTS = """
tenants:
  - name: alpha
    keys: ["alpha-key"]
  - name: beta
    keys: ["beta-key"]
  - name: ops
    admin: true
    keys: ["ops-key"]
"""
TOKEN = "probe-scrape-token"
MODELS = '{"default": "secret-model", "models": [{"name": "secret-model", "url": "%s"}]}'


def probed_stack(
    make_stack: StackFactory, broker_env: dict[str, str], tmp_path: Path, server: FakeModelServer
) -> Stack:
    if not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("once is enough: what /ready costs does not depend on the broker")
    keys = tmp_path / "tenants.yaml"
    keys.write_text(TENANTS)
    return make_stack(API_KEYS_FILE=str(keys), METRICS_TOKEN=TOKEN, MODELS=MODELS % server.url)


async def hammer(url: str, calls: int, at_once: int) -> list[httpx.Response]:
    limit = asyncio.Semaphore(at_once)
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=at_once)) as client:

        async def one() -> httpx.Response:
            async with limit:
                return await client.get(f"{url}/ready")

        return await asyncio.gather(*(one() for _ in range(calls)))


def tenant_answers(url: str, key: str, count: int) -> list[tuple[int, str, dict[str, Any]]]:
    answers = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
        for n in range(count):
            body = {"messages": [{"role": "user", "content": f"question {n}"}], "max_tokens": 20}
            answer = client.post("/v1/chat/completions", json=body)
            data = answer.json()
            answers.append((answer.status_code, data["choices"][0]["message"]["content"], data["usage"]))
    return answers


def test_hostile_tenant_beside_normal_one_keyless_ready_calls(
    make_stack: StackFactory, broker_env: dict[str, str], tmp_path: Path, servers: Any
) -> None:
    server = servers()
    stack = probed_stack(make_stack, broker_env, tmp_path, server)
    operator = {"Authorization": f"Bearer {TOKEN}"}
    # The orchestrator's probe: ready once the first round of checks is done.
    wait_until(lambda: httpx.get(f"{stack.url}/ready", timeout=10).status_code == 200, 30, "the gateway ready")
    alone = tenant_answers(stack.url, "alpha-key", 5)
    assert all(status == 200 for status, _, _ in alone)

    probes = server.probes
    answers = asyncio.run(hammer(stack.url, 100, 50))
    beside = tenant_answers(stack.url, "alpha-key", 5)
    asked = server.probes - probes

    assert [answer.status_code for answer in answers] == [200] * 100
    assert {answer.text for answer in answers} == {'{"ready":true}'}  # no part, model or server named
    # The model server was not asked once per call: a round of checks or two at most.
    assert asked <= 4, f"the model server was probed {asked} times for 100 calls of /ready"
    assert beside == alone  # the same answers, the same tokens billed
    assert httpx.get(f"{stack.url}/ready", timeout=10).status_code == 200  # the orchestrator's next probe

    # An operator (METRICS_TOKEN, an admin key) reads each part; a tenant's key does not.
    for headers in (operator, {"Authorization": "Bearer ops-key"}):
        detail = httpx.get(f"{stack.url}/ready", headers=headers, timeout=10).json()
        assert detail["ready"] is True and detail["checks"]["model_server:secret-model"]["ok"], detail
    tenant = httpx.get(f"{stack.url}/ready", headers={"Authorization": "Bearer beta-key"}, timeout=10)
    assert tenant.json() == {"ready": True} and "secret-model" not in tenant.text
