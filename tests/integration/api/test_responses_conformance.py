"""The Open Responses specification's compliance suite (tests/conformance/openresponses),
run with bun against the gateway and the fake model server: every one of its tests
passes (HTTP, SSE, WebSocket mode, compaction)."""

from __future__ import annotations

import pytest

from testing.conformance import missing, run_suite
from tests.conftest import StackFactory

pytestmark = pytest.mark.integration

KEY = "key-conformance"


def test_the_open_responses_compliance_suite_passes_whole(make_stack: StackFactory, broker_env: dict[str, str]) -> None:
    if not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("once is enough: the wire format is the same on either broker")
    why = missing()
    if why:
        pytest.skip(why)
    stack = make_stack(API_KEYS=KEY)
    summary, outcomes = run_suite(f"{stack.url}/v1", KEY, "fake-model")
    failed = [f"{o.id} ({o.name}, {o.status}): " + "; ".join(o.errors) for o in outcomes if o.status != "passed"]
    assert not failed, f"{summary['passed']} of {summary['total']} passed; failing:\n" + "\n".join(failed)
    assert summary["total"] == len(outcomes) >= 17
