"""A smoke run of the benchmark: every path answers every request, and the report is written."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.report import targets
from testing.processes import ROOT, reachable

pytestmark = [pytest.mark.slow, pytest.mark.alone]  # it loads the whole machine for minutes


def test_quick_benchmark_answers_on_every_path_and_reports_every_scenario() -> None:
    if not reachable(("127.0.0.1", 5672)) or not reachable(("127.0.0.1", 6379)):
        pytest.skip("the benchmark measures this machine's RabbitMQ and Redis")
    results = ROOT / "bench" / "results"
    before = set(results.glob("*.json")) if results.exists() else set()
    subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick"], cwd=ROOT, check=True, capture_output=True, timeout=600
    )
    (report,) = set(results.glob("*.json")) - before
    rows = json.loads(report.read_text())["rows"]
    paths = ("direct", "rabbitmq", "valkey", "usual")
    # (a) measures each broker's path on /v1/chat/completions too (the request LiteLLM's proxy is compared on).
    assert {(r["path"], r["scenario"]) for r in rows if r["scenario"] in "abc"} == {
        (p, s) for p in paths for s in "abc"
    } | {(f"{p} chat", "a") for p in paths[1:3]}
    assert {r["path"] for r in rows if r["scenario"] == "d"} == set(paths[1:])
    assert {r["path"] for r in rows if r["scenario"] == "e"} == set(paths[:3])  # the usual app cannot stream
    # The usual app has no batches; each broker's batch completed beside interactive requests.
    batches = {r["path"]: r for r in rows if r["scenario"] == "f"}
    assert set(batches) == {"rabbitmq", "valkey"}
    assert all(r["batch_completed"] == r["batch_lines"] > 0 and r["ok"] == r["requests"] for r in batches.values())
    assert all(r["ok"] == r["requests"] > 0 for r in rows if r["scenario"] in "ace")
    assert all(r["p99_ms"] >= r["p50_ms"] > 0 for r in rows)
    assert report.with_suffix(".png").stat().st_size > 10_000
    markdown = report.with_suffix(".md").read_text()
    # Every target of both brokers has its PASS/FAIL line, in the file and from the function.
    # Each broker's noisy-neighbour run answered its tenants.
    neighbours = {r["path"]: r for r in rows if r["scenario"] == "g"}
    assert set(neighbours) == {"rabbitmq", "valkey"}
    assert all(r["ok"] == r["requests"] and r["alone_ok"] > 0 and r["three_ok"] + r["one_ok"] > 0
               for r in neighbours.values())  # fmt: skip
    assert len(targets(rows)) == 2 * (2 + 2 + 3 + 1 + 1 + 4 + 2 + 2)
    assert all(line in markdown for line in targets(rows))
