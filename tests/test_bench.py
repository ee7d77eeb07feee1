"""A smoke run of the benchmark: every path answers every request, and the report is written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import reachable
from tests.processes import ROOT

pytestmark = pytest.mark.slow


def test_quick_benchmark_answers_every_request_on_every_path() -> None:
    if not reachable(("127.0.0.1", 5672)) or not reachable(("127.0.0.1", 6379)):
        pytest.skip("the benchmark measures this machine's RabbitMQ and Redis")
    results = ROOT / "bench" / "results"
    before = set(results.glob("*.json")) if results.exists() else set()
    subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick"], cwd=ROOT, check=True, capture_output=True, timeout=300
    )
    (report,) = set(results.glob("*.json")) - before
    rows = json.loads(Path(report).read_text())
    assert {(r["path"], r["scenario"][0]) for r in rows} == {
        (p, s) for p in ("direct", "rabbitmq", "valkey") for s in "ab"
    }
    assert all(r["ok"] == r["requests"] for r in rows)
    assert all(r["p99_ms"] >= r["p50_ms"] > 0 for r in rows)
    assert Path(report).with_suffix(".md").read_text().count("\n| ") == 7
