"""A coalesced embeddings call, as whom? A worker joins embedding jobs arriving
together into one model-server call (tasks/model/coalesce.py): only one tenant's, so
another tenant's inputs can neither fail a job nor weigh on its tokens."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from testing.fake_model_server import FakeModelServer, fake_vector
from tests.conftest import Stack, StackFactory

pytestmark = pytest.mark.integration

TENANTS = """
tenants:
  - name: alpha
    keys: ["key-alpha"]
  - name: beta
    keys: ["key-beta"]
"""
CONTEXT = 500  # words the fake embeds in one input at most (a 400 beyond, as vLLM's)
OVERSIZED = " ".join(["long"] * 600)  # 3,000 characters: refused by the server
HEAVY = " ".join(["x"] * 400)  # valid: 400 tokens in 799 characters (alpha's: 3 in 14)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def alpha_input(n: int) -> str:
    return f"alpha short {n:02d}"  # 3 tokens (the fake counts words)


async def alpha_and_maybe_beta(
    stack: Stack, beta_input: str | None
) -> tuple[list[httpx.Response], list[httpx.Response]]:
    """Alpha's 30 short requests, and beta's 30 of `beta_input` beside them."""
    async with httpx.AsyncClient(base_url=stack.url, timeout=60) as http:

        def embed(key: str, text: str, job_id: str) -> Any:
            body = {"model": "fake-model", "input": text, "encoding_format": "float"}
            return http.post("/v1/embeddings", json=body, headers={**auth(key), "Idempotency-Key": job_id})

        run = "alone" if beta_input is None else "hostile"
        beta = [embed("key-beta", beta_input, f"beta-{n}") for n in range(0 if beta_input is None else 30)]
        alpha = [embed("key-alpha", alpha_input(n), f"alpha-{run}-{n}") for n in range(30)]
        answers = await asyncio.gather(*beta, *alpha)
    return list(answers[len(beta) :]), list(answers[: len(beta)])


def alpha_usage(stack: Stack) -> dict[str, Any]:
    (row,) = httpx.get(f"{stack.url}/usage", headers=auth("key-alpha"), timeout=10).json()["data"]
    return row


@pytest.mark.parametrize("beta_input", [OVERSIZED, HEAVY], ids=["oversized", "heavy"])
def test_hostile_tenant_beside_normal_fails_none_of_its_jobs_and_bills_it_nothing(
    make_stack: StackFactory, fake: FakeModelServer, broker_env: dict[str, str], tmp_path: Path, beta_input: str
) -> None:
    """Beta's inputs too long for the server's context (which fail a call they are in),
    or long and valid (which weighed on a shared call's tokens), beside alpha's short ones."""
    if not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("once is enough: which jobs share a call is the worker's doing, not the broker's")
    keys = tmp_path / "tenants.yaml"
    keys.write_text(TENANTS)
    # Joined calls for sure: jobs wait 20 ms for others, and each call takes 20 ms.
    stack = make_stack(API_KEYS_FILE=str(keys), EMBED_COALESCE_WAIT_MS="20", concurrency=64)
    fake.embed_context = CONTEXT
    fake.embed_fixed = 0.02

    def alpha_answers(answers: list[httpx.Response]) -> list[tuple[list[float], int]]:
        assert [a.status_code for a in answers] == [200] * 30, [a.text for a in answers if a.status_code != 200]
        return [(a.json()["data"][0]["embedding"], a.json()["usage"]["prompt_tokens"]) for a in answers]

    alone, _ = asyncio.run(alpha_and_maybe_beta(stack, None))
    expected = alpha_answers(alone)
    assert all(tokens == 3 for _, tokens in expected)
    billed = alpha_usage(stack)

    beside, beta = asyncio.run(alpha_and_maybe_beta(stack, beta_input))
    assert max(fake.embedding_calls) > 1  # calls were joined
    # Alpha: every request answered, the same vectors, its own tokens: none sees beta's error.
    assert not any("context length" in answer.text for answer in beside)
    answered = alpha_answers(beside)
    assert [tokens for _, tokens in answered] == [3] * 30
    for n, (vector, _) in enumerate(answered):
        assert all(abs(a - b) < 1e-6 for a, b in zip(vector, fake_vector(alpha_input(n), 8), strict=True))
    # Its bill: twice what it used alone, not a token of beta's.
    after = alpha_usage(stack)
    assert (after["jobs"], after["failed"]) == (2 * billed["jobs"], 0)
    assert after["prompt_tokens"] == 2 * billed["prompt_tokens"] == 2 * 90
    # A job's result names nothing of the call it shared.
    status = httpx.get(f"{stack.url}/jobs/alpha-hostile-0", headers=auth("key-alpha"), timeout=10).json()
    assert set(status["result"]) <= {"embeddings", "model", "usage", "timing", "served_model"}, status["result"]
    # Beta: its oversized inputs refused with its own error, its valid ones answered.
    for answer in beta:
        if beta_input is OVERSIZED:
            assert answer.status_code == 400 and "maximum context length" in answer.json()["error"]["message"]
        else:
            assert answer.status_code == 200 and answer.json()["usage"]["prompt_tokens"] == 400
