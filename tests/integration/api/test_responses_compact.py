"""``POST /v1/responses/compact``: the SDK's ``client.responses.compact`` (strict
validation), the item given back as input standing for the conversation, what another
tenant and a client without a key get, and the worst inputs (a 4xx naming the field)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from api.openai.responses.sealing import SUMMARY_PROMPT
from testing.fake_model_server import FakeModelServer
from tests.conftest import Stack, StackFactory

pytestmark = pytest.mark.integration

TENANTS = """
tenants:
  - name: research
    keys: ["key-research"]
  - name: product
    keys: ["key-product"]
"""
CONVERSATION = [
    {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "The code word is slate."}]},
    {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "OK."}]},
    {"type": "message", "role": "user", "content": "Compress this conversation."},
]


def tenant_stack(make_stack: StackFactory, tmp_path: Path, broker_env: dict[str, str], **env: str) -> Stack:
    if not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("once is enough: compaction is the API's, the same on either broker")
    keys_file = tmp_path / "tenants.yaml"
    keys_file.write_text(TENANTS)
    return make_stack(API_KEYS="key-default", API_KEYS_FILE=str(keys_file), **env)


def sdk(stack: Stack, key: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{stack.url}/v1", api_key=key, max_retries=0, timeout=30, _strict_response_validation=True
    )


def post(stack: Stack, key: str | None, body: Any, path: str = "/v1/responses/compact") -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers["Content-Type"] = "application/json"
    return httpx.post(f"{stack.url}{path}", content=content, headers=headers, timeout=30)


def test_a_compacted_conversation_goes_on_as_its_summary(
    make_stack: StackFactory, tmp_path: Path, broker_env: dict[str, str], fake: FakeModelServer
) -> None:
    stack = tenant_stack(make_stack, tmp_path, broker_env)
    client = sdk(stack, "key-research")
    compacted = client.responses.compact(model="fake-model", input=CONVERSATION)  # type: ignore[arg-type]
    assert compacted.object == "response.compaction" and compacted.usage.output_tokens > 0
    (item,) = compacted.output
    assert item.type == "compaction" and "slate" not in item.encrypted_content
    # The model was asked for the summary after the conversation, through the queue.
    asked = fake.completions[-1]["messages"]
    assert asked[0]["content"] == "The code word is slate." and asked[-1] == {"role": "user", "content": SUMMARY_PROMPT}
    summary = f"echo: {SUMMARY_PROMPT}"  # what the fake model answers
    # Nothing of the compaction is kept.
    assert httpx.get(f"{stack.url}/jobs/{compacted.id}", headers=auth("key-research"), timeout=10).status_code == 404
    # Given back as input, the item is the turn that made the summary.
    went_on = client.responses.create(
        model="fake-model", input=[item.model_dump(exclude_none=True), {"role": "user", "content": "Go on."}]
    )  # type: ignore[list-item]
    assert went_on.status == "completed"
    assert fake.completions[-1]["messages"] == [
        {"role": "user", "content": SUMMARY_PROMPT},
        {"role": "assistant", "content": summary},
        {"role": "user", "content": "Go on."},
    ]
    # Its input items keep it sealed; a later turn (previous_response_id) opens it again.
    kept = client.responses.input_items.list(went_on.id).data
    assert [i.type for i in kept] == ["message", "compaction"]
    client.responses.create(model="fake-model", input="And then?", previous_response_id=went_on.id)
    assert [m["content"] for m in fake.completions[-1]["messages"]] == [
        SUMMARY_PROMPT, summary, "Go on.", "echo: Go on.", "And then?"
    ]  # fmt: skip
    # A stored response's conversation compacts too.
    again = client.responses.compact(model="fake-model", previous_response_id=went_on.id, input="Now compact.")
    assert again.output[0].type == "compaction"
    assert [m["content"] for m in fake.completions[-1]["messages"]][-3:] == [
        "echo: Go on.", "Now compact.", SUMMARY_PROMPT
    ]  # fmt: skip


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_another_tenant_can_use_neither_the_item_nor_the_response_and_no_key_is_401(
    make_stack: StackFactory, tmp_path: Path, broker_env: dict[str, str], fake: FakeModelServer
) -> None:
    stack = tenant_stack(make_stack, tmp_path, broker_env)
    item = post(stack, "key-research", {"model": "fake-model", "input": CONVERSATION}).json()["output"][0]
    stored = post(stack, "key-research", {"model": "fake-model", "input": "kept"}, "/v1/responses").json()
    asked = len(fake.completions)
    # The item opens for its tenant alone: to another it is an altered one.
    tampered = {**item, "encrypted_content": item["encrypted_content"][:-4] + "AAAA"}
    answers = [
        post(stack, "key-product", {"model": "fake-model", "input": [given, {"role": "user", "content": "hi"}]}, path)
        for given in (item, tampered)
        for path in ("/v1/responses", "/v1/responses/compact")
    ]
    assert {a.status_code for a in answers} == {422}
    assert len({a.json()["error"]["message"] for a in answers}) == 1
    assert answers[0].json()["error"]["message"].startswith("input[0].encrypted_content: not a compaction item")
    # Nor is it kept in a conversation of its (where it would be refused at every later turn).
    product = sdk(stack, "key-product")
    own = product.conversations.create(items=[{"role": "user", "content": "mine"}])
    for given in (item, tampered):
        for path in ("/v1/conversations", f"/v1/conversations/{own.id}/items"):
            kept = post(stack, "key-product", {"items": [{"role": "user", "content": "a"}, given]}, path)
            assert kept.status_code == 422, kept.text
            assert kept.json()["error"]["message"].startswith("items[1].encrypted_content: not a compaction item")
    assert len(list((Path(stack.env["FILE_STORE_URL"]) / "conversations" / "product").iterdir())) == 1
    assert [i.type for i in product.conversations.items.list(own.id).data] == ["message"]
    # Its own tenant keeps it in a conversation, and goes on from there.
    research = sdk(stack, "key-research")
    theirs_conversation = research.conversations.create(items=[item])
    went_on = research.responses.create(model="fake-model", conversation=theirs_conversation.id, input="go on")
    assert went_on.status == "completed"
    assert fake.completions[-1]["messages"][0]["content"] == SUMMARY_PROMPT
    asked = len(fake.completions)
    # Another tenant's response is one it does not have.
    missing = "resp_" + "0" * 32
    theirs, unknown = (
        post(stack, "key-product", {"model": "fake-model", "previous_response_id": prior, "input": "x"})
        for prior in (stored["id"], missing)
    )
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.text.replace(stored["id"], "ID") == unknown.text.replace(missing, "ID")
    assert len(fake.completions) == asked  # the model was asked nothing of it
    for key in (None, "key-nobody"):
        refused = post(stack, key, {"model": "fake-model", "input": "x"})
        assert refused.status_code == 401 and refused.json()["error"]["type"] == "authentication_error"


def test_the_worst_inputs_are_a_4xx_naming_the_field(
    make_stack: StackFactory, tmp_path: Path, broker_env: dict[str, str], fake: FakeModelServer
) -> None:
    stack = tenant_stack(make_stack, tmp_path, broker_env, MAX_BODY_BYTES="65536")
    deep: Any = "x"
    for _ in range(100):
        deep = [deep]
    bodies: dict[str, tuple[bytes | dict[str, Any], str]] = {
        "no model": ({"input": "x"}, "model"),
        "a null model": ({"model": None, "input": "x"}, "model"),
        "a model not a string": ({"model": 7, "input": "x"}, "model"),
        "nothing to compact": ({"model": "fake-model"}, "input"),
        "an empty input": ({"model": "fake-model", "input": []}, "input"),
        "an unknown item": ({"model": "fake-model", "input": [{"type": "reasoning"}]}, "input"),
        "an item of no content": ({"model": "fake-model", "input": [{"type": "compaction"}]}, "encrypted_content"),
        "a lone surrogate": (b'{"model": "fake-model", "input": "\\udfff"}', "input"),
        "deep nesting": ({"model": "fake-model", "input": "x", "metadata": deep}, "metadata"),
        "huge": ({"model": "fake-model", "input": "x" * 70_000}, "MAX_BODY_BYTES"),
        "a forged item": (
            {"model": "fake-model", "input": [{"type": "compaction", "encrypted_content": "llmapi-cmp1.AAAA"}]},
            "input[0].encrypted_content",
        ),
        "a bad previous_response_id": ({"model": "fake-model", "previous_response_id": "../x"}, "previous_response_id"),
    }
    for what, (body, field) in bodies.items():
        answer = post(stack, "key-research", body)
        assert 400 <= answer.status_code < 500, (what, answer.status_code, answer.text)
        assert field in answer.json()["error"]["message"], (what, answer.text)
    assert fake.completions == []  # none reached the model


def test_without_a_secret_compaction_is_refused_naming_it(make_stack: StackFactory, broker_env: dict[str, str]) -> None:
    if not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("once is enough: compaction is the API's, the same on either broker")
    stack = make_stack(workers=0, COMPACTION_SECRET="")
    for path in ("/v1/responses/compact", "/v1/responses"):
        item = {"type": "compaction", "encrypted_content": "llmapi-cmp1.AAAA"}
        answer = post(stack, "any", {"model": "fake-model", "input": [item]}, path)
        assert answer.status_code == 503 and "COMPACTION_SECRET" in answer.json()["error"]["message"], answer.text
