"""The alerting rules (deploy/prometheus/alerts.yml): checked and tested by promtool on
the synthetic series of alerts.test.yml (each alert firing and not), and read against
what the gateway exports, its status table and docs/operations.md."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from api import errors
from api.http.statuses import status_of
from api.observability.metrics import Metrics
from shared.contract import FAILURES
from testing.processes import ROOT

pytestmark = pytest.mark.unit

RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"
OPERATIONS = ROOT / "docs" / "operations.md"


def promtool() -> str:
    """promtool, from Debian's package `prometheus`; CI (.ci/run) installs it."""
    found = shutil.which("promtool")
    if found is None:
        missing = "needs promtool (apt-get install --no-install-recommends prometheus; .ci/run installs it)"
        if os.environ.get("REQUIRE_RABBITMQ"):  # set by .ci/run: CI runs every test
            pytest.fail(f"the alerting rules' test {missing}")
        pytest.skip(f"the alerting rules' test {missing}")
    return found


def rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in rules() if "alert" in rule}


def test_promtool_finds_the_rules_valid() -> None:
    checked = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules())} rules found" in checked.stdout


def test_each_alert_fires_on_its_series_and_stays_quiet_on_others() -> None:
    tested = subprocess.run([promtool(), "test", "rules", str(TESTS)], capture_output=True, text=True, timeout=120)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    # Every alert is tested both ways: some evaluation expects it, another expects none of it.
    cases = [case for test in yaml.safe_load(TESTS.read_text())["tests"] for case in test["alert_rule_test"]]
    firing = {case["alertname"] for case in cases if case["exp_alerts"]}
    quiet = {case["alertname"] for case in cases if not case["exp_alerts"]}
    assert firing == quiet == set(alerts()), (set(alerts()) - firing, set(alerts()) - quiet)


def _exported() -> dict[str, set[str]]:
    """Each series /metrics exports, with its labels, every family given a sample."""
    metrics = Metrics()
    metrics.requests.labels("/generate", "POST", "200").inc()
    metrics.request_seconds.labels("/generate").observe(0.1)
    metrics.observe_answer("m", "t", {"timing": {"queued_seconds": 0.1}, "usage": {"completion_tokens": 1}}, 0.2)
    metrics.observe_failure("m", "t", "ModelServerUnavailable")
    metrics.observe_cost("m", {"gateway": 0.01, "model": 0.1, "ttft": 0.05})
    metrics.quota_refusals.labels("t", "tokens_per_minute").inc()
    metrics.errors.labels("QueueFull").inc()
    metrics.requeues.labels("lost", "false").inc()
    server = {"name": "s", "state": "healthy", "slots": 1, "busy": 0, "failures_in_a_row": 0, "failures": 0, "jobs": 1}
    signals = {"queue": "q", "waiting": 0, "oldest_waiting_seconds": 0.0, "running": 0, "slots": 1, "busy_slots": 0,
               "workers": 1, "demand": 0, "servers": [server], "waiting_for_server": 0}  # fmt: skip
    text = metrics.render(
        {"q": 0}, {("e", "delivered"): 1}, {("m", "waiting"): 1}, {"m": signals}, {"q.dead": 0},
        {"broker": {"ok": True}, "model_server:m": {"ok": True}},
    )  # fmt: skip
    found: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            found.setdefault(sample.name, set()).update(sample.labels)
    return found


def test_every_series_the_alerts_ask_for_is_exported_with_those_labels() -> None:
    """A rule on a series or label that does not exist is never true: an alert that cannot fire."""
    exported = _exported()
    exported["up"] = set()  # Prometheus's own, per target
    for name, alert in alerts().items():
        expr = alert["expr"]
        used = {metric for metric in re.findall(r"\b([a-z_]+(?::[a-z_]+)*)\s*(?:\{|\[|\)|$| offset)", expr, re.M)
                if metric.startswith(("llm_api", "up"))}  # fmt: skip
        assert used, name
        for metric in used:
            if ":" in metric:  # a recording rule of the same file
                assert metric in {rule.get("record") for rule in rules()}, (name, metric)
                continue
            assert metric in exported, (name, metric)
            labels = exported[metric] | {"job", "instance"}  # added by Prometheus
            for selector in re.findall(rf"\b{metric}\{{([^}}]*)\}}", expr):
                assert set(re.findall(r'(\w+)\s*(?:=~|!~|!=|=)\s*"', selector)) <= labels, (name, selector)
        for grouped in re.findall(r"\bby \(([^)]*)\)", expr):
            named = {label.strip() for label in grouped.split(",") if label.strip()}
            assert named <= set().union(*(exported.get(m, set()) for m in used)) | {"job", "instance"}, (name, named)


def _caller_errors() -> set[str]:
    """Every cause a job request can be answered with a 4xx for: the gateway's refusals and
    the caller's errors (api/http/statuses.py), and the contract's failures of the job's own."""

    def below(cls: type) -> list[type]:
        return [each for sub in cls.__subclasses__() for each in (sub, *below(sub))]

    found = {cls.__name__ for cls in below(errors.GatewayError) if cls is not errors.JobFailed
             and status_of(cls("x")) < 500}  # fmt: skip
    return found | {name for name, failure in FAILURES.items() if failure.status < 500}


def test_the_error_ratio_counts_every_failure_of_the_gateway_and_no_error_of_the_caller() -> None:
    (excluded,) = re.findall(r'outcome!~"([^"]+)"', alerts()["LLMApiModelErrors"]["expr"])
    assert set(excluded.split("|")) == {"succeeded"} | _caller_errors()
    # And the failures that are the gateway's or the model server's are counted.
    assert not {"ModelServerUnavailable", "ModelServerTimeout", "JobTimedOut", "BrokerUnavailable",
                "ResultStoreUnavailable", "JobFailed"} & set(excluded.split("|"))  # fmt: skip


def _anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of a page."""
    headings = re.findall(r"^#+ (.+)$", markdown, re.M)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


def test_each_alert_says_how_bad_it_is_and_links_its_section_of_operations_md() -> None:
    anchors = _anchors(OPERATIONS.read_text())
    for name, alert in alerts().items():
        assert alert["labels"]["severity"] in {"critical", "warning"}, name
        annotations = alert["annotations"]
        assert {"summary", "description", "runbook_url"} <= set(annotations), name
        path, _, anchor = annotations["runbook_url"].partition("#")
        assert path == "docs/operations.md" and anchor == name.lower() and anchor in anchors, name


def test_prometheus_and_compose_load_the_rules() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    (rule_file,) = config["rule_files"]
    assert (ROOT / "deploy" / rule_file) == RULES  # relative to prometheus.yml
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = dict(volume.rsplit(":", 1)[0].split(":", 1) for volume in compose["services"]["prometheus"]["volumes"])
    inside = {source: target for source, target in mounts.items()}
    assert inside["./deploy/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    assert f"{inside['./deploy/prometheus']}/{RULES.name}" == f"/etc/prometheus/{rule_file}"
