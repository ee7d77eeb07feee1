"""The Open Responses specification's compliance suite (tests/conformance/openresponses),
run with bun against the gateway and the fake model server: every one of its tests
passes (HTTP, SSE, WebSocket mode, compaction)."""

from __future__ import annotations

import json

import httpx
import pytest

from testing.conformance import missing, run_suite
from testing.fake_model_server import FakeModelServer
from testing.sse import read_events
from tests.conftest import StackFactory

pytestmark = pytest.mark.integration

KEY = "key-conformance"


def _once(broker_env: dict[str, str]) -> None:
    if not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("once is enough: the wire format is the same on either broker")


def test_the_open_responses_compliance_suite_passes_whole(make_stack: StackFactory, broker_env: dict[str, str]) -> None:
    _once(broker_env)
    why = missing()
    if why:
        pytest.skip(why)
    stack = make_stack(API_KEYS=KEY)
    summary, outcomes = run_suite(f"{stack.url}/v1", KEY, "fake-model")
    failed = [f"{o.id} ({o.name}, {o.status}): " + "; ".join(o.errors) for o in outcomes if o.status != "passed"]
    assert not failed, f"{summary['passed']} of {summary['total']} passed; failing:\n" + "\n".join(failed)
    assert summary["total"] == len(outcomes) >= 17


# The fields the specification requires of every response object, present even when null.
REQUIRED_FIELDS = {
    "presence_penalty", "frequency_penalty", "top_logprobs", "reasoning", "max_tool_calls", "service_tier",
    "safety_identifier", "prompt_cache_key", "completed_at", "usage", "error", "incomplete_details",
}  # fmt: skip


def test_every_response_object_has_the_specifications_fields(
    make_stack: StackFactory, fake: FakeModelServer, broker_env: dict[str, str]
) -> None:
    _once(broker_env)
    stack = make_stack(workers=0)  # a background response stays queued
    url, headers = f"{stack.url}/v1/responses", {"Authorization": "Bearer unused"}
    asked = {"model": "fake-model", "input": "hi", "safety_identifier": "user-7", "prompt_cache_key": "k1",
             "presence_penalty": 0.5}  # fmt: skip
    queued = httpx.post(url, json={**asked, "background": True}, headers=headers, timeout=30).json()
    again = httpx.get(f"{url}/{queued['id']}", headers=headers, timeout=30).json()
    for answer in (queued, again):
        assert answer.keys() >= REQUIRED_FIELDS, REQUIRED_FIELDS - answer.keys()
        assert answer["status"] == "queued" and answer["completed_at"] is None and answer["usage"] is None
        assert (answer["safety_identifier"], answer["prompt_cache_key"]) == ("user-7", "k1")
        assert (answer["presence_penalty"], answer["frequency_penalty"]) == (0.5, 0.0)
        assert answer["reasoning"] == {"effort": None, "summary": None} and answer["max_tool_calls"] is None
    stack.processes.worker(stack.env)
    events = [json.loads(data) for _, data in read_events(url, {**asked, "stream": True}, headers)]
    opening = {e["type"]: e["response"] for e in events[:2]}
    assert set(opening) == {"response.created", "response.in_progress"}
    for response in opening.values():
        assert response.keys() >= REQUIRED_FIELDS and response["completed_at"] is None
    done = events[-1]["response"]
    assert done["status"] == "completed" and isinstance(done["completed_at"], int)
    assert fake.completions[-1]["presence_penalty"] == 0.5  # passed on, as it is repeated
    # What the specification types as a string is one: anything else is refused, naming it.
    for field in ("safety_identifier", "prompt_cache_key"):
        refused = httpx.post(url, json={**asked, field: {"x": 1}}, headers=headers, timeout=30)
        assert refused.status_code in (400, 422) and field in refused.text
