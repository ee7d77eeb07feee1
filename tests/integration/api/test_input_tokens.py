"""``POST /v1/responses/input_tokens`` as the official SDK (strict validation) asks it:
counted by the model's server, as vLLM and llama.cpp count, the same number a response's
usage reports for that input; the model's and the tenant's checks of /v1/responses; a
server that cannot count, or is down, named by its model and never by its address; the
worst bodies refused with a 4xx naming the field."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import openai
import pytest

from testing.fake_model_server import FakeModelServer, free_port
from testing.openai_sdk import client
from tests.conftest import Stack, StackFactory

pytestmark = pytest.mark.integration

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
TENANTS = """
tenants:
  - name: alpha
    keys: ["alpha-key"]
  - name: beta
    keys: ["beta-key"]
"""


def keyed(stack: Stack, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.url}/v1", api_key=key, max_retries=0, timeout=30,
                         _strict_response_validation=True)  # fmt: skip


def test_the_count_is_the_tokens_a_responses_usage_reports_for_that_input(
    stack_once: Stack, fake: FakeModelServer
) -> None:
    sdk = client(stack_once)
    asked = {"model": "fake-model", "input": "one two three", "instructions": "Be brief.", "tools": [WEATHER]}
    counted = sdk.responses.input_tokens.count(**asked)
    answered = sdk.responses.create(**asked)
    assert counted.object == "response.input_tokens"
    assert answered.usage is not None and counted.input_tokens == answered.usage.input_tokens == 13
    # vLLM's /tokenize, asked with the chat a response sends (its tools in chat's shape).
    (tokenize,) = fake.tokenized
    assert tokenize["model"] == "fake-model" and tokenize["add_generation_prompt"] is True
    assert tokenize["messages"] == fake.completions[-1]["messages"]
    assert tokenize["tools"] == fake.completions[-1]["tools"]
    # The conversation a previous response ended with is counted too, as a response's would be.
    following = {"model": "fake-model", "input": "four", "previous_response_id": answered.id}
    assert sdk.responses.input_tokens.count(**following).input_tokens == (
        sdk.responses.create(**following).usage.input_tokens  # type: ignore[union-attr]
    )
    # Empty instructions alone: nothing is sent, nothing counted.
    assert sdk.responses.input_tokens.count(model="fake-model", instructions="").input_tokens == 0


def test_a_llama_cpp_server_is_counted_by_its_template(stack_once: Stack, fake: FakeModelServer) -> None:
    # llama.cpp's /tokenize reads only `content` (a chat's body is answered {"tokens": []}):
    # the chat is made its prompt by /apply-template, then that prompt is counted.
    fake.tokenizer = "llama.cpp"
    sdk = client(stack_once)
    assert sdk.responses.input_tokens.count(model="fake-model", input="one two three").input_tokens == 7
    assert [sorted(body) for body in fake.tokenized[-2:]] == [
        ["messages"],
        ["add_special", "content", "parse_special"],
    ]
    # Remembered: the next count asks the template at once.
    fake.tokenized.clear()
    assert sdk.responses.input_tokens.count(model="fake-model", input="one two").input_tokens == 6
    assert [sorted(body) for body in fake.tokenized] == [["messages"], ["add_special", "content", "parse_special"]]
    # A vLLM back at that address is asked its way again.
    fake.tokenizer = "vllm"
    assert sdk.responses.input_tokens.count(model="fake-model", input="one two").input_tokens == 6


def test_a_server_that_cannot_count_or_answer_is_named_by_its_model_never_its_address(
    make_stack: StackFactory, fake: FakeModelServer
) -> None:
    closed = free_port()  # nothing listens there
    models = {
        "models": [
            {"name": "small", "url": fake.url, "served_name": "fake-model"},
            {"name": "gone", "url": f"http://127.0.0.1:{closed}", "served_name": "fake-model"},
            {"name": "pair", "servers": [{"url": f"http://127.0.0.1:{closed}"}, {"url": fake.url}],
             "served_name": "fake-model"},
        ]
    }  # fmt: skip
    stack = make_stack(workers=0, MODELS=json.dumps(models))
    sdk = client(stack)
    # One server of two down: the other counts.
    assert sdk.responses.input_tokens.count(model="pair", input="a b").input_tokens == 6
    addresses = ("127.0.0.1", str(fake.port), str(closed))
    fake.tokenizer = None  # as Ollama or TGI: no /tokenize
    with pytest.raises(openai.APIStatusError) as cannot:
        sdk.responses.input_tokens.count(model="small", input="x")
    assert cannot.value.status_code == 501 and "'small'" in cannot.value.message
    assert "/tokenize" in cannot.value.message
    fake.tokenizer = "vllm"
    with pytest.raises(openai.APIStatusError) as down:
        sdk.responses.input_tokens.count(model="gone", input="x")
    assert down.value.status_code == 502 and "'gone'" in down.value.message and "ConnectError" in down.value.message
    fake.broken = 500
    with pytest.raises(openai.APIStatusError) as broken:
        sdk.responses.input_tokens.count(model="small", input="x")
    assert broken.value.status_code == 502 and "'small'" in broken.value.message
    for refused in (cannot.value, down.value, broken.value):
        assert not any(address in refused.message for address in addresses), refused.message
    fake.broken = None
    # A model the registry does not list: 404, as /v1/responses answers it.
    with pytest.raises(openai.NotFoundError, match="not served here"):
        sdk.responses.input_tokens.count(model="nowhere", input="x")
    with pytest.raises(openai.NotFoundError, match="not served here"):
        sdk.responses.create(model="nowhere", input="x")


def test_a_tenant_counts_only_with_its_key_and_its_own_responses(
    make_stack: StackFactory, fake: FakeModelServer, tmp_path: Path
) -> None:
    keys = tmp_path / "tenants.yaml"
    keys.write_text(TENANTS)
    stack = make_stack(API_KEYS_FILE=str(keys))
    alpha, beta = keyed(stack, "alpha-key"), keyed(stack, "beta-key")
    made = alpha.responses.create(model="fake-model", input="alpha's")
    assert alpha.responses.input_tokens.count(model="fake-model", input="x", previous_response_id=made.id).input_tokens
    url = f"{stack.url}/v1/responses/input_tokens"

    def count(response_id: str, key: str) -> httpx.Response:
        body = {"model": "fake-model", "input": "x", "previous_response_id": response_id}
        return httpx.post(url, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30)

    theirs, missing = count(made.id, "beta-key"), count("resp_000none", "beta-key")
    assert missing.status_code == 404
    assert (theirs.status_code, theirs.text.replace(made.id, "<id>")) == (
        missing.status_code,
        missing.text.replace("resp_000none", "<id>"),
    )
    with pytest.raises(openai.NotFoundError):
        beta.responses.input_tokens.count(model="fake-model", input="x", previous_response_id=made.id)
    assert httpx.post(url, json={"model": "fake-model", "input": "x"}, timeout=30).status_code == 401
    assert (
        httpx.post(url, json={"input": "x"}, headers={"Authorization": "Bearer wrong"}, timeout=30).status_code == 401
    )


def test_the_worst_bodies_are_a_4xx_naming_the_field(stack_once: Stack, fake: FakeModelServer) -> None:
    url = f"{stack_once.url}/v1/responses/input_tokens"
    limit = stack_once.config.max_prompt_chars
    deep = b"[" * 40 + b"]" * 40
    for body, field in [
        (json.dumps({"input": "x" * (limit + 1)}).encode(), "input"),
        (json.dumps({"input": "x" * (limit // 2), "instructions": "y" * (limit // 2 + 1)}).encode(), "input"),
        (json.dumps({"input": [{"role": "user", "content": "x"}] * (stack_once.config.max_messages + 1)}).encode(),
         "input"),
        (b'{"input": "\\udfff"}', "input"),
        (b'{"input": [{"role": "user", "content": "a\\ud800b"}]}', "input"),
        (b'{"input": "x", "instructions": "\\udc00"}', "instructions"),
        (b'{"input": ' + deep + b"}", "input"),
        (b'{"input": ' + b"[" * 1000 + b"]" * 1000 + b"}", "MAX_JSON_DEPTH"),
        (b'{"input": "x", "tools": [{"type": "web_search"}]}', "tools"),
        (b'{"input": [{"type": "message", "role": "robot", "content": "x"}]}', "role"),
        (b'{"input": "x", "previous_response_id": "not-a-response"}', "previous_response_id"),
        (b'{"input": "x", "model": "no such model!"}', "model"),
        (b"{}", "input"),
    ]:  # fmt: skip
        answer = httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=30)
        assert 400 <= answer.status_code < 500, (body[:80], answer.status_code, answer.text)
        assert field in answer.text, (body[:80], answer.text)
    assert httpx.get(url, timeout=30).status_code == 405  # not taken for a response's id
    assert fake.tokenized == []  # nothing reached the model server
