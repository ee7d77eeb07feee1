"""Dead letters over HTTP: ``GET /dead_letters`` lists them, ``POST /dead_letters/replay``
puts jobs back, and only admin keys reach either (a dead letter holds its job's request)."""

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
    keys: ["alpha-key"]
  - name: ops
    admin: true
    keys: ["ops-key"]
"""


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_a_failed_job_is_listed_and_replayed_by_an_admin_and_then_answers(
    make_stack: StackFactory, fake: FakeModelServer, tmp_path: Path
) -> None:
    keys_file = tmp_path / "tenants.yaml"
    keys_file.write_text(TENANTS)
    stack = make_stack(API_KEYS_FILE=str(keys_file), METRICS_TOKEN="scrape-token", LLM_MAX_RETRIES="1")
    url = stack.url
    fake.broken = 500
    body = {"job_id": "doomed", "content": "again"}
    failed = httpx.post(f"{url}/generate", json=body, headers=auth("alpha-key"), timeout=60)
    assert failed.status_code >= 500
    listed = lambda: httpx.get(f"{url}/dead_letters", headers=auth("ops-key"), timeout=30).json()["data"]  # noqa: E731
    wait_until(listed, 20, "a dead letter")
    (dead,) = httpx.get(f"{url}/dead_letters", headers=auth("ops-key"), timeout=30).json()["data"]
    assert dead["job_id"] == "alpha~doomed" and dead["tenant"] == "alpha" and dead["task"] == "llm.generate"
    assert "ModelServerFailed" in dead["reason"] and dead["dead_at"]
    # Admin keys only: not a tenant's (the job's own tenant's neither), nor the scrape token.
    for key, status in (("alpha-key", 403), ("scrape-token", 401), (None, 401)):
        headers = auth(key) if key else {}
        assert httpx.get(f"{url}/dead_letters", headers=headers).status_code == status
        refused = httpx.post(f"{url}/dead_letters/replay", json={"job_ids": ["alpha~doomed"]}, headers=headers)
        assert refused.status_code == status
    assert httpx.get(f"{url}/jobs/doomed", headers=auth("alpha-key")).json()["status"] == "failed"

    # Asked for nothing: refused, naming the field (every one at once is the command line's).
    for wrong in ({}, {"job_ids": []}, {"all": True}):
        answer = httpx.post(f"{url}/dead_letters/replay", json=wrong, headers=auth("ops-key"))
        assert answer.status_code == 422 and "job_ids" in answer.text
    fake.broken = None
    replayed = httpx.post(
        f"{url}/dead_letters/replay", json={"job_ids": ["alpha~doomed", "alpha~never"]}, headers=auth("ops-key"),
        timeout=30,
    ).json()  # fmt: skip
    assert replayed == {"replayed": ["alpha~doomed"], "skipped": {}, "missing": ["alpha~never"]}
    wait_until(
        lambda: httpx.get(f"{url}/jobs/doomed", headers=auth("alpha-key")).json()["status"] == "succeeded",
        20,
        "the replayed job to be answered",
    )
    answer = httpx.get(f"{url}/jobs/doomed", headers=auth("alpha-key")).json()
    assert answer["result"]["content"] == "echo: again"
    assert httpx.get(f"{url}/dead_letters", headers=auth("ops-key")).json()["data"] == []
