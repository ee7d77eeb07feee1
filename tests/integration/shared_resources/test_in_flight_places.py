"""A tenant's places in flight, as whom: a job that ended frees its place, however it
ended and whatever was deleted of it after (`store: false`, `DELETE`), so a tenant
with `jobs_in_flight` is never locked out by its own finished jobs; another tenant's
answers and bill are its own."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from testing.fake_model_server import FakeModelServer
from testing.load import wait_until
from tests.conftest import StackFactory

pytestmark = pytest.mark.integration

TENANTS = """
tenants:
  - name: alpha
    keys: ["key-alpha"]
  - name: tiny
    keys: ["key-tiny"]
    quotas: {jobs_in_flight: 2}
"""


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_hostile_tenant_beside_normal_frees_its_places_as_its_jobs_end_whatever_is_deleted(
    make_stack: StackFactory, fake: FakeModelServer, broker_env: dict[str, str], tmp_path: Path
) -> None:
    if not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("once is enough: a tenant's places are counted in Redis the same on either broker")
    keys_file = tmp_path / "tenants.yaml"
    keys_file.write_text(TENANTS)
    stack = make_stack(API_KEYS_FILE=str(keys_file))
    url = f"{stack.url}/v1/responses"
    tiny = auth("key-tiny")
    # Twice as many responses as tiny has places, one after another, each deleted as
    # it ends: store false (read, then deleted), streamed with store false, and
    # background responses deleted once completed.
    for n in range(2):
        made = httpx.post(url, json={"input": f"plain {n}", "store": False}, headers=tiny, timeout=30)
        assert made.status_code == 200 and made.json()["output"][0]["content"][0]["text"] == f"echo: plain {n}"
    for n in range(2):
        with httpx.stream("POST", url, json={"input": f"streamed {n}", "store": False, "stream": True},
                          headers=tiny, timeout=30) as streamed:  # fmt: skip
            assert streamed.status_code == 200, streamed.read()
            assert "response.completed" in streamed.read().decode()
    for n in range(2):
        made = httpx.post(url, json={"input": f"background {n}", "background": True}, headers=tiny, timeout=30)
        assert made.status_code == 200, made.text
        response = f"{url}/{made.json()['id']}"
        wait_until(lambda r=response: httpx.get(r, headers=tiny).json()["status"] == "completed", 30, "the response")
        assert httpx.delete(response, headers=tiny, timeout=30).status_code == 200
    # A background response deleted while it runs: cancelled, and its place is free too.
    fake.latency = 10
    made = httpx.post(url, json={"input": "long", "background": True}, headers=tiny, timeout=30)
    wait_until(lambda: fake.in_flight == 1, 30, "the model server to be asked")
    assert httpx.delete(f"{url}/{made.json()['id']}", headers=tiny, timeout=30).status_code == 200
    # Every place is free again: tiny has two jobs in flight, and a third is refused.
    fake.latency = 2
    held = [httpx.post(url, json={"input": f"held {n}", "background": True}, headers=tiny, timeout=30)
            for n in range(2)]  # fmt: skip
    assert [h.status_code for h in held] == [200, 200], [h.text for h in held]
    over = httpx.post(url, json={"input": "one more", "background": True}, headers=tiny, timeout=30)
    assert over.status_code == 429 and "has 2 jobs queued or running, at most 2" in over.json()["error"]["message"]
    # alpha, beside it, is answered and billed for its own tokens.
    fake.latency = 0
    ask = {"model": "fake-model", "messages": [{"role": "user", "content": "alpha asks"}]}
    answer = httpx.post(f"{stack.url}/v1/chat/completions", json=ask, headers=auth("key-alpha"), timeout=60)
    assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"] == "echo: alpha asks"
    days = httpx.get(f"{stack.url}/usage", headers=auth("key-alpha"), timeout=10).json()["data"]
    assert [(d["tenant"], d["jobs"], d["total_tokens"]) for d in days] == [
        ("alpha", 1, answer.json()["usage"]["total_tokens"])
    ]
