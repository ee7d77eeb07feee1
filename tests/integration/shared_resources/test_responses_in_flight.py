"""In-flight places: a tenant's jobs in flight (quota jobs_in_flight) are those accepted
whose result is not stored. A response whose result is deleted once read (`store:
false`) or by DELETE /v1/responses/{id} has ended, and frees its place with it."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from testing.fake_model_server import FakeModelServer
from tests.conftest import StackFactory

pytestmark = pytest.mark.integration

TENANTS = """
tenants:
  - name: alpha
    keys: ["key-alpha"]
    quotas:
      jobs_in_flight: 2
  - name: beta
    keys: ["key-beta"]
"""


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_responses_deleted_once_read_or_by_their_client_free_their_tenants_places_in_flight(
    make_stack: StackFactory, fake: FakeModelServer, broker_env: dict[str, str], tmp_path: Path
) -> None:
    if not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("once is enough: the places are counted in Redis, whichever the broker")
    keys = tmp_path / "tenants.yaml"
    keys.write_text(TENANTS)
    stack = make_stack(API_KEYS_FILE=str(keys))
    with httpx.Client(base_url=stack.url, headers=auth("key-alpha"), timeout=60) as http:

        def respond(**fields: object) -> httpx.Response:
            return http.post("/v1/responses", json={"model": "fake-model", "input": "hi", **fields})

        # Each answered in turn: never more than one in flight, with two places.
        unkept = [respond(store=False) for _ in range(5)]
        assert [a.status_code for a in unkept] == [200] * 5, [a.text for a in unkept]
        streamed = [respond(store=False, stream=True) for _ in range(3)]
        assert [a.status_code for a in streamed] == [200] * 3, [a.text for a in streamed]
        for _ in range(3):
            kept = respond()
            assert kept.status_code == 200, kept.text
            assert http.delete(f"/v1/responses/{kept.json()['id']}").status_code == 200
        answer = http.post(
            "/v1/chat/completions", json={"model": "fake-model", "messages": [{"role": "user", "content": "x"}]}
        )
        assert answer.status_code == 200, answer.text
