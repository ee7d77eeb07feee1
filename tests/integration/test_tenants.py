"""Tenants through the whole gateway: whose jobs, their quotas across API processes, their usage."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from testing.fake_model_server import FakeModelServer, free_port
from tests.conftest import Stack, StackFactory

pytestmark = pytest.mark.integration

TENANTS = """
tenants:
  - name: research
    weight: 3
    keys: ["key-research"]
    quotas: {requests_per_minute: 1000, tokens_per_minute: %(tpm)s, tokens_per_day: %(tpd)s,
             jobs_in_flight: %(in_flight)s}
  - name: product
    keys: ["key-product"]
  - name: ops
    admin: true
    keys: ["key-ops"]
"""


def tenant_stack(
    make_stack: StackFactory, tmp_path: Path, tpm: int = 100_000, in_flight: int = 1000, tpd: int = 10_000_000
) -> Stack:
    keys_file = tmp_path / "tenants.yaml"
    keys_file.write_text(TENANTS % {"tpm": tpm, "in_flight": in_flight, "tpd": tpd})
    return make_stack(API_KEYS="key-default", API_KEYS_FILE=str(keys_file))


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def utc_minute(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime(at))


def test_each_job_is_its_tenants_on_its_status_logs_and_metrics(
    make_stack: StackFactory, fake: FakeModelServer, tmp_path: Path
) -> None:
    stack = tenant_stack(make_stack, tmp_path)
    for key, job_id in (("key-research", "tenant-job-r"), ("key-default", "tenant-job-d")):
        answer = httpx.post(f"{stack.url}/generate", json={"job_id": job_id, "content": "hi"}, headers=auth(key))
        assert answer.status_code == 200 and answer.json()["content"] == "echo: hi"
    status = httpx.get(f"{stack.url}/jobs/tenant-job-r", headers=auth("key-research"), timeout=10).json()
    assert status["tenant"] == "research" and status["status"] == "succeeded"
    # Another tenant's job is one it does not have; an admin names whose it reads.
    assert httpx.get(f"{stack.url}/jobs/tenant-job-r", headers=auth("key-product"), timeout=10).status_code == 404
    default = httpx.get(f"{stack.url}/jobs/tenant-job-d?tenant=default", headers=auth("key-ops"), timeout=10).json()
    assert default["tenant"] == "default" and default["job_id"] == "tenant-job-d"
    # Every line about the job (its key: research~tenant-job-r), in the API's log and the
    # worker's, names the tenant; each access line names the tenant that asked; no key appears.
    api, worker = stack.processes.started[-1].output(), stack.processes.started[0].output()
    for log in (api, worker):
        logged = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
        lines = [line for line in logged if line.get("job_id") == "research~tenant-job-r"]
        assert lines and all(line.get("tenant") == "research" for line in lines)
        assert "key-research" not in log and "key-default" not in log
    access = [json.loads(line) for line in api.splitlines() if line.startswith('{"') and '"api.access"' in line]
    asked = {line["message"]: line.get("tenant") for line in access}
    assert asked["GET /jobs/tenant-job-r 200"] == "research" and asked["GET /jobs/tenant-job-r 404"] == "product"
    metrics = httpx.get(f"{stack.url}/metrics", headers=auth("key-ops"), timeout=10).text
    assert 'llm_api_jobs_total{model="default",outcome="succeeded",tenant="research"} 1.0' in metrics


def test_a_tenants_tokens_per_minute_are_counted_across_api_processes(
    make_stack: StackFactory, fake: FakeModelServer, tmp_path: Path
) -> None:
    stack = tenant_stack(make_stack, tmp_path, tpm=8)
    second = f"http://127.0.0.1:{free_port()}"
    stack.processes.api(stack.env, int(second.rsplit(":", 1)[1]))
    urls = (stack.url, second)
    used = 0
    refused = None
    # Each answer's tokens (the fake counts words) go to the tenant's count for the
    # minute, whichever API process took the request: the quota holds across them.
    for n in range(10):
        url = urls[n % 2]
        answer = httpx.post(f"{url}/v1/chat/completions", headers=auth("key-research"),
                            json={"messages": [{"role": "user", "content": "one two three"}]})  # fmt: skip
        if answer.status_code == 429:
            refused = answer
            break
        assert answer.status_code == 200
        usage = answer.json()["usage"]
        used += usage["prompt_tokens"] + usage["completion_tokens"]
    assert refused is not None and used >= 8
    error = refused.json()["error"]
    assert error["type"] == "rate_limit_error" and "quota tokens_per_minute" in error["message"]
    assert "'research'" in error["message"] and f"used {used} tokens" in error["message"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 61
    asked = len(fake.completions)
    # The spec's endpoints answer the same refusal; nothing was queued for either.
    spec = httpx.post(f"{second}/generate", json={"content": "x"}, headers=auth("key-research"))
    assert spec.status_code == 429 and "tokens_per_minute" in spec.json()["detail"]
    assert len(fake.completions) == asked
    # Another tenant is not held back.
    assert httpx.post(f"{second}/generate", json={"content": "x"}, headers=auth("key-product")).status_code == 200
    assert len(fake.completions) == asked + 1
    # The gateway's own jobs are not the tenant's: it can still list the models.
    models = httpx.get(f"{stack.url}/v1/models", headers=auth("key-research"), timeout=30)
    assert models.status_code == 200 and models.json()["data"]
    metrics = "".join(httpx.get(f"{url}/metrics", headers=auth("key-ops"), timeout=10).text for url in urls)
    assert 'llm_api_quota_refusals_total{quota="tokens_per_minute",tenant="research"}' in metrics


def test_jobs_in_flight_are_bounded_per_tenant_and_freed_as_they_end(
    make_stack: StackFactory, fake: FakeModelServer, tmp_path: Path
) -> None:
    stack = tenant_stack(make_stack, tmp_path, in_flight=2)
    fake.latency = 1.0
    accepted = [
        httpx.post(f"{stack.url}/generate?wait=0", json={"job_id": f"flight-{n}", "content": "x"},
                   headers=auth("key-research"))
        for n in range(2)
    ]  # fmt: skip
    assert [a.status_code for a in accepted] == [202, 202]
    over = httpx.post(f"{stack.url}/generate?wait=0", json={"content": "y"}, headers=auth("key-research"))
    assert over.status_code == 429 and "quota jobs_in_flight" in over.json()["detail"]
    assert "2 jobs queued or running, at most 2" in over.json()["detail"] and over.headers["Retry-After"] == "1"
    # The same job asked for again is not a new one in flight.
    again = httpx.post(f"{stack.url}/generate?wait=0", json={"job_id": "flight-0", "content": "x"},
                       headers=auth("key-research"))  # fmt: skip
    assert again.status_code == 202
    # Another tenant is not bounded by research's quota; a cancelled job frees its place.
    assert (
        httpx.post(f"{stack.url}/generate?wait=0", json={"content": "z"}, headers=auth("key-product")).status_code
        == 202
    )
    assert httpx.delete(f"{stack.url}/jobs/flight-1", headers=auth("key-research")).status_code == 200
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        later = httpx.post(f"{stack.url}/generate?wait=0", json={"content": "w"}, headers=auth("key-research"))
        if later.status_code == 202:
            break
        time.sleep(0.2)
    assert later.status_code == 202


def test_usage_per_tenant_model_and_day_with_an_admin_seeing_all(
    make_stack: StackFactory, fake: FakeModelServer, tmp_path: Path
) -> None:
    stack = tenant_stack(make_stack, tmp_path)
    for key, content in (("key-research", "a b"), ("key-research", "c d e"), ("key-product", "f")):
        assert httpx.post(f"{stack.url}/generate", json={"content": content}, headers=auth(key)).status_code == 200
    # A job submitted without waiting is counted too (by the worker, as it stores the answer).
    job = httpx.post(f"{stack.url}/v1/chat/completions?wait=0", headers=auth("key-product"),
                     json={"messages": [{"role": "user", "content": "g h"}]})  # fmt: skip
    assert job.status_code in (200, 202)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        mine = httpx.get(f"{stack.url}/usage", headers=auth("key-product"), timeout=10).json()
        if sum(row["jobs"] for row in mine["data"]) == 2:
            break
        time.sleep(0.2)
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert mine["end"] == today and [row["tenant"] for row in mine["data"]] == ["product"]
    (row,) = mine["data"]
    assert row["date"] == today and row["model"] == "default" and row["jobs"] == 2 and row["failed"] == 0
    assert row["total_tokens"] == row["prompt_tokens"] + row["completion_tokens"] > 0
    research = httpx.get(f"{stack.url}/usage", headers=auth("key-research"), timeout=10).json()["data"]
    assert [(r["tenant"], r["jobs"]) for r in research] == [("research", 2)]
    # research's answers were "echo: a b" and "echo: c d e": 3 + 4 completion tokens.
    assert research[0]["completion_tokens"] == 7
    everyone = httpx.get(f"{stack.url}/usage", headers=auth("key-ops"), timeout=10).json()["data"]
    assert {r["tenant"]: r["jobs"] for r in everyone} == {"product": 2, "research": 2}
    chosen = httpx.get(f"{stack.url}/usage?tenant=research", headers=auth("key-ops"), timeout=10).json()["data"]
    assert [r["tenant"] for r in chosen] == ["research"]
    forbidden = httpx.get(f"{stack.url}/usage?tenant=research", headers=auth("key-product"), timeout=10)
    assert forbidden.status_code == 403 and "admin key" in forbidden.json()["detail"]
    backwards = httpx.get(f"{stack.url}/usage?start=2026-02-02&end=2026-02-01", headers=auth("key-ops"))
    assert backwards.status_code == 200 and backwards.json()["data"] == []
    # A start before the days kept reads from the first day kept (USAGE_DAYS).
    long_ago = httpx.get(f"{stack.url}/usage?start=2000-01-01", headers=auth("key-ops")).json()
    assert long_ago["start"] > "2025-01-01" and {r["tenant"] for r in long_ago["data"]} == {"product", "research"}


def test_usage_per_minute_of_the_last_hour_counts_answers_and_failures_in_their_minute(
    make_stack: StackFactory, fake: FakeModelServer, tmp_path: Path
) -> None:
    stack = tenant_stack(make_stack, tmp_path)
    before = time.time()
    for key, content in (("key-research", "a b"), ("key-product", "c")):
        assert httpx.post(f"{stack.url}/generate", json={"content": content}, headers=auth(key)).status_code == 200
    fake.broken = 500  # the model server fails every call: the job fails, past its retries
    failed = httpx.post(f"{stack.url}/generate", json={"content": "d"}, headers=auth("key-research"), timeout=60)
    assert failed.status_code >= 500
    after = time.time()
    asked = time.time()
    minute = httpx.get(f"{stack.url}/usage?per=minute", headers=auth("key-research"), timeout=10).json()
    answered = time.time()
    # The last 60 minutes, the current one last (the minute may turn while it is asked).
    assert minute["per"] == "minute" and (minute["start"], minute["end"]) in {
        (utc_minute(at - 59 * 60), utc_minute(at)) for at in (asked, answered)
    }
    rows = minute["data"]
    assert {row["tenant"] for row in rows} == {"research"}
    spans = {utc_minute(at) for at in (before, after)}
    assert {row["minute"] for row in rows} <= spans
    assert sum(row["jobs"] for row in rows) == 1 and sum(row["failed"] for row in rows) == 1
    assert sum(row["completion_tokens"] for row in rows) == 3  # "echo: a b"
    # The day's figures hold the same jobs: one count, two windows.
    day = httpx.get(f"{stack.url}/usage", headers=auth("key-research"), timeout=10).json()["data"]
    assert sum(row["jobs"] for row in day) == 1 and sum(row["failed"] for row in day) == 1
    everyone = httpx.get(f"{stack.url}/usage?per=minute", headers=auth("key-ops"), timeout=10).json()["data"]
    assert {row["tenant"] for row in everyone} == {"research", "product"}
    walled = httpx.get(f"{stack.url}/usage?per=minute&tenant=product", headers=auth("key-research"), timeout=10)
    assert walled.status_code == 403
    mixed = httpx.get(f"{stack.url}/usage?per=minute&start=2026-01-01", headers=auth("key-ops"), timeout=10)
    assert mixed.status_code == 422 and "per=minute" in mixed.json()["detail"]


def test_a_tenants_tokens_per_day_end_with_the_utc_day(
    make_stack: StackFactory, fake: FakeModelServer, tmp_path: Path
) -> None:
    stack = tenant_stack(make_stack, tmp_path, tpd=5)
    body = {"messages": [{"role": "user", "content": "one two three"}]}
    first = httpx.post(f"{stack.url}/v1/chat/completions", json=body, headers=auth("key-research"), timeout=30)
    assert first.status_code == 200 and first.json()["usage"]["total_tokens"] >= 5
    refused = httpx.post(f"{stack.url}/v1/chat/completions", json=body, headers=auth("key-research"), timeout=30)
    assert refused.status_code == 429
    message = refused.json()["error"]["message"]
    assert "quota tokens_per_day" in message and "this UTC day" in message
    # Retry-After points at the next UTC midnight.
    now = time.time()
    assert abs(int(refused.headers["Retry-After"]) - (86_400 - now % 86_400)) <= 5
    assert len(fake.completions) == 1
