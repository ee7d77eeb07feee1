"""OpenAI's embeddings through the queue, as the official SDK (strict validation) asks
for them: every input form, float and base64; limits; coalescing of jobs arriving
together into one model-server call; a batch of embedding lines."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest

from testing.fake_model_server import FakeModelServer, fake_vector
from testing.openai_sdk import client, file_lines, upload, wait_until_finished
from tests.conftest import Stack, StackFactory

pytestmark = pytest.mark.integration


def close(vector: list[float], expected: list[float]) -> bool:
    return len(vector) == len(expected) and all(abs(a - b) < 1e-6 for a, b in zip(vector, expected, strict=True))


def test_every_input_form_float_and_base64(stack_once: Stack, fake: FakeModelServer) -> None:
    sdk = client(stack_once)
    # The SDK's default asks for base64 and decodes it after validating the raw answer,
    # whose vectors are then strings: strict validation refuses that from any server.
    lenient = openai.OpenAI(base_url=f"{stack_once.url}/v1", api_key="unused", max_retries=0, timeout=30)
    forms = [
        ("one text", ["one text"]),
        (["a", "b c"], ["a", "b c"]),
        ([1, 2, 3], [[1, 2, 3]]),
        ([[1, 2], [3]], [[1, 2], [3]]),
    ]
    for given, inputs in forms:
        as_floats = sdk.embeddings.create(model="fake-model", input=given, encoding_format="float")
        assert [d.index for d in as_floats.data] == list(range(len(inputs)))
        assert all(close(d.embedding, fake_vector(i, 8)) for d, i in zip(as_floats.data, inputs, strict=True))
        assert as_floats.usage.prompt_tokens > 0 and as_floats.model == "fake-model"
        # The SDK's default asks for base64 and decodes it: the same vectors.
        decoded = lenient.embeddings.create(model="fake-model", input=given)
        assert [d.embedding for d in decoded.data] == [d.embedding for d in as_floats.data]
    raw = httpx.post(f"{stack_once.url}/v1/embeddings", json={"input": "x", "encoding_format": "base64"}, timeout=30)
    packed = base64.b64decode(raw.json()["data"][0]["embedding"])
    assert close(list(struct.unpack(f"<{len(packed) // 4}f", packed)), fake_vector("x", 8))
    # dimensions, and a server's own field, passed on.
    sdk.embeddings.create(model="fake-model", input="x", dimensions=4, encoding_format="float",
                          extra_body={"truncate_prompt_tokens": 32})  # fmt: skip
    assert fake.requests[-1]["dimensions"] == 4 and fake.requests[-1]["truncate_prompt_tokens"] == 32


def test_limits_are_4xx_naming_the_field(make_stack: StackFactory, fake: FakeModelServer) -> None:
    stack = make_stack(MAX_EMBEDDING_INPUTS="3", MAX_EMBEDDING_INPUT_TOKENS="4", MAX_PROMPT_CHARS="10")
    url = f"{stack.url}/v1/embeddings"
    for body in (
        {"input": ["a", "b", "c", "d"]},
        {"input": [[1, 2, 3, 4, 5]]},
        {"input": "x" * 11},
        {"input": ""},
        {"input": []},
        {"input": [-1]},
        {"input": ["a", 1]},
        {"input": "x", "dimensions": 0},
        {"input": "x", "encoding_format": "int8"},
    ):
        answer = httpx.post(url, json=body, timeout=10)
        assert answer.status_code == 400, (body, answer.text)
        assert answer.json()["error"]["param"].split(".")[0] in ("input", "dimensions", "encoding_format"), body
    assert fake.requests == []


def test_jobs_arriving_together_share_model_server_calls(make_stack: StackFactory, fake: FakeModelServer) -> None:
    stack = make_stack(EMBED_COALESCE_WAIT_MS="20", concurrency=64)
    fake.embed_fixed = 0.05  # a call's own cost: what coalescing saves

    async def many() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as http:
            return await asyncio.gather(*(
                http.post(f"{stack.url}/v1/embeddings", json={"input": f"text {n}", "encoding_format": "float"})
                for n in range(40)
            ))  # fmt: skip

    answers = asyncio.run(many())
    assert all(a.status_code == 200 for a in answers)
    for n, answer in enumerate(answers):
        assert close(answer.json()["data"][0]["embedding"], fake_vector(f"text {n}", 8))
    assert sum(fake.embedding_calls) == 40
    assert len(fake.embedding_calls) < 20 and max(fake.embedding_calls) > 1, fake.embedding_calls


def test_without_coalescing_each_job_is_its_own_call(make_stack: StackFactory, fake: FakeModelServer) -> None:
    stack = make_stack(EMBED_COALESCE_WAIT_MS="0", concurrency=16)
    fake.embed_fixed = 0.02

    async def many() -> None:
        async with httpx.AsyncClient(timeout=60) as http:
            await asyncio.gather(*(http.post(f"{stack.url}/v1/embeddings", json={"input": f"t{n}"}) for n in range(16)))

    asyncio.run(many())
    assert fake.embedding_calls == [1] * 16


def test_one_input_too_long_for_the_server_fails_only_its_own_job_of_a_shared_call(
    make_stack: StackFactory, fake: FakeModelServer, broker_env: dict[str, str]
) -> None:
    if not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("once is enough: which jobs share a call is the worker's doing, not the broker's")
    stack = make_stack(EMBED_COALESCE_WAIT_MS="200", concurrency=16)
    fake.embed_context = 5  # words: the server refuses a call holding a longer input with 400

    async def together() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as http:
            texts = ["short one", "far too long for the model's context window", "short two"]
            return await asyncio.gather(*(
                http.post(f"{stack.url}/v1/embeddings", json={"input": text, "encoding_format": "float"})
                for text in texts
            ))  # fmt: skip

    first, refused, second = asyncio.run(together())
    assert fake.embedding_calls[0] == 3  # one call, refused for one input's sake
    assert refused.status_code == 400 and "maximum context length" in refused.json()["error"]["message"]
    for answer, text in ((first, "short one"), (second, "short two")):
        assert answer.status_code == 200, answer.text
        assert close(answer.json()["data"][0]["embedding"], fake_vector(text, 8))
        assert answer.json()["usage"]["prompt_tokens"] == 2


def test_one_cancelled_job_of_a_shared_call_leaves_the_others_answered(
    make_stack: StackFactory, fake: FakeModelServer
) -> None:
    stack = make_stack(EMBED_COALESCE_WAIT_MS="200", concurrency=16)
    fake.embed_fixed = 1.0

    async def scene() -> dict[str, int]:
        async with httpx.AsyncClient(timeout=60) as http:
            sent = {
                key: asyncio.create_task(http.post(f"{stack.url}/v1/embeddings", json={"input": key},
                                                   headers={"Idempotency-Key": key}))
                for key in ("keep-1", "keep-2", "drop-1")
            }  # fmt: skip
            while not fake.embedding_calls:  # noqa: ASYNC110 - the fake's own list, in this process
                await asyncio.sleep(0.02)
            assert (await http.delete(f"{stack.url}/jobs/drop-1")).status_code == 200
            return {key: (await task).status_code for key, task in sent.items()}

    assert asyncio.run(scene()) == {"keep-1": 200, "keep-2": 200, "drop-1": 409}
    assert fake.embedding_calls == [3]


def test_a_batch_of_embedding_lines(stack: Stack, fake: FakeModelServer) -> None:
    sdk = client(stack)
    lines = [
        {"custom_id": f"e{n}", "method": "POST", "url": "/v1/embeddings",
         "body": {"model": "fake-model", "input": [f"doc {n}", f"doc {n} again"]}}
        for n in range(20)
    ]  # fmt: skip
    batch = sdk.batches.create(input_file_id=upload(sdk, lines), endpoint="/v1/embeddings", completion_window="24h")
    batch = wait_until_finished(sdk, batch.id)
    assert batch.status == "completed" and batch.request_counts.completed == 20
    for line in file_lines(sdk, batch.output_file_id):
        body = openai.types.CreateEmbeddingResponse.model_validate(line["response"]["body"], strict=True)
        n = int(line["custom_id"][1:])
        assert close(body.data[1].embedding, fake_vector(f"doc {n} again", 8))


def test_embedding_tokens_are_the_tenants_usage(make_stack: StackFactory, fake: FakeModelServer) -> None:
    stack = make_stack()
    sdk = client(stack)
    answer = sdk.embeddings.create(model="fake-model", input=["one two three", "four five"], encoding_format="float")
    assert answer.usage.prompt_tokens == 5  # the fake counts words
    (row,) = httpx.get(f"{stack.url}/usage", timeout=10).json()["data"]
    assert row["jobs"] == 1 and row["prompt_tokens"] == 5 and row["completion_tokens"] == 0


def test_a_model_with_two_servers_embeds_on_their_slots_and_on_the_other_when_one_fails(
    make_stack: StackFactory, servers: Any
) -> None:
    one, two = servers(), servers()
    models = {"models": [{"name": "m", "served_name": "fake-model",
                          "servers": [{"url": one.url, "slots": 2}, {"url": two.url, "slots": 2}]}]}  # fmt: skip
    stack = make_stack(MODELS=json.dumps(models), EMBED_COALESCE_WAIT_MS="0")
    sdk = client(stack)
    for n in range(6):
        answer = sdk.embeddings.create(model="m", input=f"text {n}", encoding_format="float")
        assert close(answer.data[0].embedding, fake_vector(f"text {n}", 8))
    assert len(one.embedding_calls) + len(two.embedding_calls) == 6
    # The server the slots favoured fails: every call is answered by the other.
    failing, other = (one, two) if len(one.embedding_calls) >= len(two.embedding_calls) else (two, one)
    failing.broken = 503
    answered = len(other.embedding_calls)
    for n in range(4):
        assert sdk.embeddings.create(model="m", input=f"again {n}", encoding_format="float").data
    assert len(other.embedding_calls) == answered + 4


def test_every_server_of_a_model_down_an_embedding_waits_for_one_or_takes_a_fallback(
    make_stack: StackFactory, servers: Any, broker_env: dict[str, str]
) -> None:
    if not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("once is enough: a model's servers are the worker's, not the broker's")
    one, two, spare = servers(), servers(), servers()
    one.broken = two.broken = 503
    spare.models = ["spare-model"]
    models = {"models": [
        {"name": "m", "served_name": "fake-model",
         "servers": [{"url": one.url, "slots": 2}, {"url": two.url, "slots": 2}]},
        {"name": "f", "served_name": "fake-model", "servers": [{"url": one.url, "slots": 2}],
         "fallbacks": ["spare"], "fallback_after": 0.5},
        {"name": "spare", "url": spare.url, "served_name": "spare-model"},
    ]}  # fmt: skip
    stack = make_stack(MODELS=json.dumps(models), EMBED_COALESCE_WAIT_MS="0", LLM_DEADLINE="60",
                       SERVER_FAILURES="1", SERVER_PROBE_BACKOFF="0.2", SERVER_PROBE_MAX="0.4")  # fmt: skip
    body = {"model": "m", "input": "waited", "encoding_format": "float"}
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(httpx.post, f"{stack.url}/v1/embeddings", json=body, timeout=60)
        while not (one.requests and two.requests):  # each server failed it once: both are down
            assert not waiting.done(), waiting.result().text
            time.sleep(0.02)
        time.sleep(0.5)
        assert not waiting.done()  # it waits for a server, as a chat job does
        two.broken = None
        answer = waiting.result(timeout=60)
    assert answer.status_code == 200, answer.text
    assert close(answer.json()["data"][0]["embedding"], fake_vector("waited", 8))
    # A model with fallbacks: its job runs on the fallback and says so.
    body = {"model": "f", "input": "fell back", "encoding_format": "float"}
    answer = httpx.post(f"{stack.url}/v1/embeddings", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-served-model"] == "spare" and answer.json()["model"] == "spare-model"
    assert spare.requests[-1]["model"] == "spare-model"
