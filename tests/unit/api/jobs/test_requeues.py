"""No code path queues a job again without bound (api/jobs/requeues.py: `Requeues`)."""

from __future__ import annotations

import logging

import pytest

from api.jobs.requeues import MAX_REQUEUES, Requeues
from api.observability.metrics import Metrics
from shared.tenants import EVERYONE, Owner, job_key, tenant_of

pytestmark = pytest.mark.unit


def _count(metrics: Metrics, reason: str, refused: str) -> float:
    return metrics.registry.get_sample_value("llm_api_jobs_requeued_total", {"reason": reason, "refused": refused}) or 0


def test_a_job_is_queued_again_at_most_the_ceiling_then_refused_logged_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics()
    requeues = Requeues(metrics)
    assert all(requeues.allow("alpha~line-1", "resent") for _ in range(MAX_REQUEUES))
    with caplog.at_level(logging.ERROR):
        assert not requeues.allow("alpha~line-1", "resent")
    assert "queued again 10 times already" in caplog.text
    assert _count(metrics, "resent", "false") == MAX_REQUEUES and _count(metrics, "resent", "true") == 1
    assert requeues.allow("alpha~line-2", "lost")  # each job its own count


def test_the_counts_forget_the_oldest_jobs_first() -> None:
    requeues = Requeues(Metrics(), size=2)
    for _ in range(MAX_REQUEUES):
        requeues.allow("a", "broker")
    requeues.allow("b", "broker")
    requeues.allow("c", "broker")  # "a" is forgotten: its count starts again
    assert requeues.allow("a", "broker")


def test_a_tenants_job_key_cannot_be_named_by_another_tenants_job_id() -> None:
    assert job_key("default", "report-17") == "report-17"  # no tenants: ids as they were
    assert job_key("research", "report-17") == "research~report-17"
    assert tenant_of(job_key("research", "report-17")) == "research" and tenant_of("report-17") == "default"


def test_a_tenant_sees_its_own_files_and_those_its_keys_made_before() -> None:
    alpha = Owner("tenant:alpha", frozenset({"key:0123456789abcdef"}))
    assert alpha.sees("tenant:alpha") and alpha.sees("key:0123456789abcdef")
    assert not alpha.sees("tenant:beta") and not alpha.sees(None)
    assert EVERYONE.sees("tenant:beta") and EVERYONE.sees(None)
    assert Owner("tenant:ops", every=True).sees("tenant:alpha")
