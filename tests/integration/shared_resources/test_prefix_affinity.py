"""Prefix affinity: a prompt prefix's server is remembered per tenant, so no tenant's
job follows another's to its server (and times that server's prompt cache)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from testing.fake_model_server import FakeModelServer
from tests.conftest import Stack, StackFactory

pytestmark = pytest.mark.integration

TENANTS = """
tenants:
  - name: alpha
    keys: ["key-alpha"]
  - name: beta
    keys: ["key-beta"]
"""
# alpha's long system prompt (a prefix of over PREFIX_AFFINITY_CHARS), which beta sends too.
SYSTEM = {"role": "system", "content": "You answer for alpha's private catalogue of parts. " * 30}


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def ask(stack: Stack, key: str, content: str) -> dict[str, Any]:
    body = {"model": "m", "messages": [SYSTEM, {"role": "user", "content": content}]}
    answer = httpx.post(f"{stack.url}/v1/chat/completions", json=body, headers=auth(key), timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"] == f"echo: {content}"
    return answer.json()


def received(server: FakeModelServer) -> list[str]:
    return [body["messages"][-1]["content"] for body in server.completions]


def billed(stack: Stack, key: str, jobs: int) -> int:
    """The tenant's tokens in /usage once `jobs` of its jobs are counted."""
    deadline = time.monotonic() + 30
    while True:
        rows = httpx.get(f"{stack.url}/usage", headers=auth(key), timeout=10).json()["data"]
        if sum(row["jobs"] for row in rows) >= jobs or time.monotonic() > deadline:
            return sum(row["total_tokens"] for row in rows)
        time.sleep(0.2)


def test_hostile_tenant_beside_normal_does_not_follow_its_prompt_to_its_server(
    make_stack: StackFactory, servers: Any, broker_env: dict[str, str], tmp_path: Path
) -> None:
    if not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("once is enough: which server a job takes is the same on either broker")
    # Two servers a little apart in speed (the same class: neither over twice the other's
    # time, with room for a loaded machine's delays), each counting the calls its prompt
    # cache served (at the same speed, so the classes stay). Untimed, the first listed
    # takes the first job; timed, the quicker one (a) takes a job no prefix sends elsewhere.
    b, a = servers(latency=0.4), servers(latency=0.3)
    for server in (a, b):
        server.cached_latency = server.latency
    keys_file = tmp_path / "tenants.yaml"
    keys_file.write_text(TENANTS)
    models = {"models": [{"name": "m", "servers": [{"url": b.url, "slots": 2}, {"url": a.url, "slots": 2}]}]}
    stack = make_stack(API_KEYS_FILE=str(keys_file), MODELS=json.dumps(models))

    ask(stack, "key-alpha", "alpha-1")
    assert received(b) == ["alpha-1"]  # alpha's prompt is now in b's cache
    # The hostile tenant, beta, sends alpha's system prompt to learn whether (and where)
    # alpha's prompt is cached. Its jobs take the server a job of no prefix would (a,
    # quicker), then follow beta's own affinity: none reaches alpha's server, none is
    # answered from alpha's cache.
    hits = b.prefix_hits
    answers = [ask(stack, "key-beta", f"beta-{n}") for n in range(6)]
    assert received(a) == [f"beta-{n}" for n in range(6)]
    assert received(b) == ["alpha-1"] and b.prefix_hits == hits
    assert a.prefix_hits == 5  # beta's first was computed in full; its next five hit its own cache
    # alpha's own affinity still holds: its next turn goes back to b, though a is quicker.
    ask(stack, "key-alpha", "alpha-2")
    assert received(b) == ["alpha-1", "alpha-2"] and b.prefix_hits == hits + 1
    # beta's bill is its own jobs' tokens, as its answers reported them.
    assert billed(stack, "key-beta", 6) == sum(answer["usage"]["total_tokens"] for answer in answers)
