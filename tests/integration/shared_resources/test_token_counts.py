"""The model servers' tokenizers, as whom: a token count (``/v1/responses/input_tokens``,
``/v1/messages/count_tokens``) is asked of the model's server by the API directly, not
queued; a tenant asking many at once has at most TOKEN_COUNTS_PER_TENANT of them at the
server per API process (the rest refused at once, never sent), and another tenant's
count goes to the server at once beside them, answered as it is alone."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from testing.fake_model_server import FakeModelServer
from testing.load import wait_until
from tests.conftest import Stack, StackFactory

pytestmark = pytest.mark.integration

TENANTS = """
tenants:
  - name: alpha
    keys: ["alpha-key"]
  - name: beta
    keys: ["beta-key"]
"""
BOUND = 3
HOSTILE = 12
COUNT = {"model": "fake-model", "input": "one two three four", "instructions": "Be brief."}


@pytest.fixture
def stack(make_stack: StackFactory, broker_env: dict[str, str], tmp_path: Path) -> Stack:
    if not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("once is enough: token counts do not go through the broker")
    keys = tmp_path / "tenants.yaml"
    keys.write_text(TENANTS)
    return make_stack(workers=0, API_KEYS_FILE=str(keys), TOKEN_COUNTS_PER_TENANT=str(BOUND))


@pytest.fixture
def held(fake_server: FakeModelServer) -> Iterator[FakeModelServer]:
    fake_server.reset()
    yield fake_server
    fake_server.tokenize_held = False


def count(stack: Stack, key: str, path: str = "/v1/responses/input_tokens") -> httpx.Response:
    body = COUNT if path.startswith("/v1/responses") else {
        "model": "fake-model", "messages": [{"role": "user", "content": "one two three four"}], "system": "Be brief."
    }  # fmt: skip
    headers = {"Authorization": f"Bearer {key}", "x-api-key": key, "anthropic-version": "2023-06-01"}
    return httpx.post(f"{stack.url}{path}", json=body, headers=headers, timeout=60)


@pytest.mark.parametrize("path", ["/v1/responses/input_tokens", "/v1/messages/count_tokens"])
def test_hostile_tenant_beside_normal_token_counts(stack: Stack, held: FakeModelServer, path: str) -> None:
    alone = count(stack, "beta-key", path)
    assert alone.status_code == 200, alone.text
    held.tokenize_held = True
    with ThreadPoolExecutor(HOSTILE + 1) as pool:
        hostile: list[Future[httpx.Response]] = [pool.submit(count, stack, "alpha-key", path) for _ in range(HOSTILE)]
        # The tenant's bound reaches the server; the rest are refused at once, never sent.
        wait_until(lambda: sum(f.done() for f in hostile) == HOSTILE - BOUND, 30, "the hostile counts past the bound")
        refused = [f.result() for f in hostile if f.done()]
        assert {r.status_code for r in refused} == {429}
        assert all("token_counts_in_flight" in r.text and "Retry-After" in r.headers for r in refused)
        assert held.tokenizing == BOUND
        # The normal tenant's count goes to the server at once, beside the held ones.
        normal = pool.submit(count, stack, "beta-key", path)
        wait_until(lambda: held.tokenizing == BOUND + 1, 30, "the normal tenant's count at the server")
        held.tokenize_held = False
        assert normal.result().status_code == 200
        assert normal.result().json() == alone.json()  # answered as it is alone
        assert [f.result().status_code for f in hostile].count(200) == BOUND
    # Its places came back as its counts were answered.
    assert count(stack, "alpha-key", path).status_code == 200
