"""What an operator watches: /metrics, /ready, and the committed Grafana dashboard and alerting rules."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import pytest
import yaml
from kombu import Connection

from shared.broker.settings import celery_settings
from testing.fake_model_server import FakeModelServer
from testing.load import redis_binary, wait_until
from testing.metrics import samples, value
from testing.processes import ROOT, RedisServer, wait_for_output
from tests.conftest import Stack, StackFactory

pytestmark = pytest.mark.integration

DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "llm-api.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"


def test_metrics_count_a_known_batch(stack: Stack, fake: FakeModelServer) -> None:
    before = samples(stack.url)
    answers = [httpx.post(f"{stack.url}/generate", json={"content": f"m {i}"}, timeout=30) for i in range(5)]
    assert [a.status_code for a in answers] == [200] * 5
    assert httpx.post(f"{stack.url}/generate", json={"meta": {}}, timeout=30).status_code == 422
    after = samples(stack.url)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("llm_api_requests_total", endpoint="/generate", method="POST", status="200") == 5
    assert moved("llm_api_requests_total", endpoint="/generate", method="POST", status="422") == 1
    assert moved("llm_api_errors_total", cause="InvalidRequest") == 1
    assert moved("llm_api_jobs_total", model="default", outcome="succeeded", tenant="default") == 5
    assert moved("llm_api_job_seconds_count", model="default", tenant="default") == 5
    assert moved("llm_api_queue_seconds_count", model="default", tenant="default") == 5
    # The fake model counts a word as a token: "echo: m N" is 3.
    assert moved("llm_api_tokens_total", model="default", tenant="default") == 15
    assert value(after, "llm_api_jobs_waiting", queue=stack.env["QUEUE_NAME"]) == 0
    assert value(after, "llm_api_jobs_in_flight") == 0


def ready_once(url: str, ready: bool) -> httpx.Response:
    """/ready once it says `ready` (it answers from checks made in the background)."""
    answers: list[httpx.Response] = []

    def says() -> bool:
        answers.append(httpx.get(f"{url}/ready", timeout=20))
        return answers[-1].json()["ready"] is ready

    wait_until(says, 30, f"/ready to say ready: {ready}")
    return answers[-1]


def test_ready_names_each_missing_part(make_stack: StackFactory, fake: FakeModelServer) -> None:
    stack = make_stack(workers=0)
    # Until the first round of checks ends, not ready.
    answer = ready_once(stack.url, False)
    assert answer.status_code == 503
    wait_until(lambda: "workers:default" in httpx.get(f"{stack.url}/ready", timeout=20).json()["checks"], 30,
               "the first round of checks")  # fmt: skip
    checks = httpx.get(f"{stack.url}/ready", timeout=20).json()["checks"]
    assert checks["broker"]["ok"] and checks["result_store"]["ok"] and checks["model_server:default"]["ok"]
    assert not checks["workers:default"]["ok"] and "0 worker(s)" in checks["workers:default"]["detail"]
    stack.processes.worker(stack.env)
    ready = ready_once(stack.url, True)
    assert ready.status_code == 200
    fake.stop()
    try:
        down = ready_once(stack.url, False)
    finally:
        fake.start()
    assert down.status_code == 503
    assert not down.json()["checks"]["model_server:default"]["ok"]
    assert [name for name, check in down.json()["checks"].items() if not check["ok"]] == ["model_server:default"]
    # Which part failed, never where it lives.
    assert "127.0.0.1" not in down.text and str(fake.port) not in down.text


def _parts(url: str) -> dict[tuple[str, str], float]:
    return {(dict(labels)["part"], dict(labels)["model"]): up
            for (name, labels), up in samples(url).items() if name == "llm_api_part_up"}  # fmt: skip


def test_scrapes_alone_keep_the_parts_gauges_and_count_the_dead_letters(
    make_stack: StackFactory, fake: FakeModelServer, broker_env: dict[str, str], tmp_path: Path
) -> None:
    # A Redis of the test's own, to stop: the result store (and, without RabbitMQ, the broker).
    server = RedisServer(redis_binary(broker_env), tmp_path / "redis", persist=False).start()
    try:
        stack = make_stack(workers=1, REDIS_HOST="127.0.0.1", REDIS_PORT=str(server.port))
        # Nobody asks /ready: Prometheus scraping alone starts the checks and keeps them going.
        # The control plane's database as its last poll found it (beside the checks, not one).
        everything = {("broker", ""): 1, ("result_store", ""): 1, ("model_server", "default"): 1,
                      ("workers", "default"): 1, ("database", ""): 1}  # fmt: skip
        wait_until(lambda: _parts(stack.url) == everything, 30, "every part up on /metrics")
        dead = f"{stack.env['QUEUE_NAME']}.dead"
        assert value(samples(stack.url), "llm_api_dead_letters", queue=dead) == 0
        # A message no worker can process is a dead letter; the scrape counts it.
        config = stack.config
        main = celery_settings(config)["task_queues"][0]
        with Connection(config.broker_url, transport_options=celery_settings(config)["broker_transport_options"]) as c:
            c.Producer().publish(b"{not json", routing_key=main.routing_key, exchange=main.exchange, declare=[main],
                                 content_type="application/json", content_encoding="utf-8")  # fmt: skip
        wait_until(lambda: value(samples(stack.url), "llm_api_dead_letters", queue=dead) == 1, 30, "1 dead letter")
        server.stop()
        down = {**everything, ("result_store", ""): 0}
        if not broker_env["RABBIT_MQ_HOST"]:  # the same server was the broker
            down |= {("broker", ""): 0, ("workers", "default"): 0}
        wait_until(lambda: _parts(stack.url) == down, 30, f"/metrics to say {down}")
        if not broker_env["RABBIT_MQ_HOST"]:  # no count from a broker that does not answer, rather than -1
            assert ("llm_api_dead_letters", (("queue", dead),)) not in samples(stack.url)
    finally:
        server.stop()


def test_every_metric_the_dashboard_and_the_alerts_query_exists(stack: Stack, fake: FakeModelServer) -> None:
    httpx.post(f"{stack.url}/generate", json={"content": "for the dashboard"}, timeout=30)
    # The parts' gauges, once the checks a scrape starts have made their first round.
    wait_until(lambda: any(name == "llm_api_part_up" for name, _ in samples(stack.url)), 30, "llm_api_part_up")
    exposed = {name for name, _ in samples(stack.url)}
    # A labelled family with no sample yet (no quota refused so far) is declared all the same.
    declared = re.findall(r"^# TYPE (\S+) (\w+)$", httpx.get(f"{stack.url}/metrics", timeout=10).text, re.M)
    exposed |= {name for name, _ in declared}
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    assert queries
    rules = yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]
    queries += [rule["expr"] for rule in rules if "alert" in rule]
    used = {name for expr in queries for name in re.findall(r"\b(llm_api_[a-z_]+|flower_[a-z_]+)\b", expr)}
    ours = {name for name in used if name.startswith("llm_api_")}
    assert ours and ours <= exposed, ours - exposed


def test_a_job_can_be_followed_through_the_logs_of_api_and_worker(stack: Stack, fake: FakeModelServer) -> None:
    job_id = f"traced-{time.time_ns()}"
    assert httpx.post(f"{stack.url}/generate", json={"job_id": job_id, "content": "x"}, timeout=30).status_code == 200
    api = next(p for p in stack.processes.started if p.name == "api")
    worker = next(p for p in stack.processes.started if p.name.startswith("worker"))
    wait_for_output(worker, job_id)

    def lines_about(output: str) -> list[dict]:
        found = []
        for line in output.splitlines():
            if job_id in line:
                found.append(json.loads(line[line.index("{") :]))  # every line about the job is JSON
        return found

    from_api, from_worker = lines_about(api.output()), lines_about(worker.output())
    (access,) = [line for line in from_api if line["logger"] == "api.access"]
    assert access["message"] == "POST /generate 200" and access["status"] == 200 and access["seconds"] > 0
    assert access["client"].startswith("127.0.0.1:")
    assert {line["job_id"] for line in from_api + from_worker} == {job_id}
    assert all(line["queue"] == stack.env["QUEUE_NAME"] and line["model"] == "default" for line in from_api)
    (done,) = [line for line in from_worker if line["message"] == "job done"]
    assert done["model"] == "default" and done["queue"] == stack.env["QUEUE_NAME"]
    assert done["seconds"] >= 0 and done["queued_seconds"] >= 0 and done["tokens"] > 0
    assert done["finish_reason"] == "stop"
    # The answer's text stays out of the logs (Celery's "succeeded" line carried it).
    assert not any("echo: x" in line["message"] for line in from_worker)


def test_the_interactive_docs_need_no_internet(stack: Stack) -> None:
    # Swagger UI and ReDoc load their scripts from the API itself, not from a CDN: on a
    # GPU box without internet, /docs and /redoc still work.
    for page in ("/docs", "/redoc"):
        html = httpx.get(f"{stack.url}{page}", timeout=10).text
        assert "http://" not in html and "https://" not in html, page
        assets = re.findall(r'(?:src|href)="(/[^"]+)"', html)
        assert any(asset.endswith(".js") for asset in assets), page
        for asset in assets:
            answer = httpx.get(f"{stack.url}{asset}", timeout=10)
            assert answer.status_code == 200 and len(answer.content) > 1000, asset
    schema = httpx.get(f"{stack.url}/openapi.json", timeout=10).json()
    assert "/generate" in schema["paths"] and "/docs" not in schema["paths"]
