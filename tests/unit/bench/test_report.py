"""The benchmark's report: scenario (a) against LiteLLM's proxy, on the same endpoint."""

from __future__ import annotations

import math
from typing import Any

import pytest

from bench.compare import figures
from bench.report import against_litellm, markdown

pytestmark = pytest.mark.unit

META = {"date": "today", "machine": "here", "quick": False}


def row(path: str, endpoint: str, p50: float, p99: float) -> dict[str, Any]:
    return {"path": path, "scenario": "a", "endpoint": endpoint, "p50_ms": p50, "p99_ms": p99, "latencies_ms": []}


ROWS = [
    row("direct", "/v1/chat/completions", 0.5, 1.0),
    row("rabbitmq", "/generate", 4.0, 6.0),
    row("rabbitmq chat", "/v1/chat/completions", 4.5, 7.0),
    row("litellm", "/v1/chat/completions", 9.5, 13.0),
]


def test_the_gateway_is_compared_with_litellm_on_the_chat_endpoint_only() -> None:
    compared = against_litellm(ROWS)
    assert set(compared) == {"rabbitmq chat"}  # /generate is another request: no ratio for it
    x = compared["rabbitmq chat"]
    assert (x["added_p50_ms"], x["litellm_added_p50_ms"], x["p50_ratio"]) == (4.0, 9.0, 0.44)
    assert (x["added_p99_ms"], x["litellm_added_p99_ms"], x["p99_ratio"]) == (6.0, 12.0, 0.5)


def test_no_ratio_without_the_direct_path_to_measure_what_each_adds() -> None:
    assert against_litellm([r for r in ROWS if r["path"] != "direct"]) == {}
    assert against_litellm([r for r in ROWS if r["path"] != "litellm"]) == {}


def test_a_litellm_adding_nothing_gives_no_ratio_rather_than_an_error() -> None:
    rows = [*ROWS[:3], row("litellm", "/v1/chat/completions", 0.5, 1.0)]
    assert math.isnan(against_litellm(rows)["rabbitmq chat"]["p50_ratio"])


def test_report_and_compare_show_the_ratio() -> None:
    text = markdown(META, ROWS)
    assert "| litellm | /v1/chat/completions | 9.5 | 13.0 | 9.00 | 12.00 |" in text
    assert "| rabbitmq | /generate | 4.0 | 6.0 | 3.50 | 5.00 |" in text
    assert "added p50 4.00 ms (rabbitmq chat) / 9.00 ms (litellm) = 0.44" in text
    assert figures(ROWS)["(a) rabbitmq chat / litellm, added"] == "p50 4.0 / 9.0 ms = 0.44, p99 6.0 / 12.0 ms = 0.5"
