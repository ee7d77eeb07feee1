"""What a request may ask of the model server: every field that sets an amount of work
(tokens, choices, beams, stop words) is bounded by the deployment's limits on every
endpoint, passed-on fields included; fields the gateway translates are never overridden
by a passed-on field of the same name; fallbacks name models of the registry
everywhere; token ids are said wrong as token ids."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from testing.fake_model_server import FakeModelServer
from testing.openai_sdk import chat_line
from tests.conftest import Stack, StackFactory

pytestmark = pytest.mark.integration

USER = {"role": "user", "content": "hi"}
HUGE = 1_000_000_000

# (endpoint, body, the field the refusal names, what else it says)
REFUSED: list[tuple[str, dict[str, Any], str, str]] = [
    ("/v1/responses", {"input": "hi", "messages": [{"role": "user", "content": "another question"}]}, "messages",
     "input"),
    ("/v1/responses", {"input": "hi", "n": 1000}, "n", "one answer"),
    ("/v1/responses", {"input": "hi", "max_completion_tokens": HUGE}, "max_completion_tokens", "max_output_tokens"),
    ("/v1/responses", {"input": "hi", "max_tokens": HUGE}, "max_tokens", "max_output_tokens"),
    ("/v1/responses", {"input": "hi", "stop": ["a"] * 100}, "stop", ""),
    ("/v1/responses", {"input": "hi", "min_tokens": HUGE}, "min_tokens", "MAX_TOKENS_LIMIT"),
    ("/v1/responses", {"input": "hi", "num_predict": HUGE}, "num_predict", "MAX_TOKENS_LIMIT"),
    ("/v1/chat/completions", {"messages": [USER], "max_completion_tokens": HUGE}, "max_completion_tokens",
     "MAX_TOKENS_LIMIT"),
    ("/v1/chat/completions", {"messages": [USER], "min_tokens": HUGE}, "min_tokens", "MAX_TOKENS_LIMIT"),
    ("/v1/chat/completions", {"messages": [USER], "best_of": 1000}, "best_of", "MAX_CHOICES"),
    ("/v1/chat/completions", {"messages": [USER], "n": 1000}, "n", "16"),
    ("/v1/chat/completions", {"messages": [USER], "ignore_eos": True}, "ignore_eos", "max_tokens"),
    ("/v1/chat/completions", {"messages": [USER], "max_new_tokens": "many"}, "max_new_tokens", "integer"),
    ("/v1/completions", {"prompt": "hi", "best_of": 1000}, "best_of", "16"),
    ("/v1/completions", {"prompt": "hi", "max_completion_tokens": HUGE}, "max_completion_tokens",
     "MAX_TOKENS_LIMIT"),
    ("/v1/completions", {"prompt": [1, 2, 3]}, "prompt", "token ids"),
    ("/v1/embeddings", {"input": [1, 2, 2**32]}, "input", "token id 4294967296 at input[2] is out of range"),
    ("/v1/embeddings", {"input": [[1, 2], [3, -1]]}, "input", "token id -1 at input[1][1] is out of range"),
    ("/v1/embeddings", {"input": "hi", "max_tokens": HUGE}, "max_tokens", "MAX_TOKENS_LIMIT"),
]  # fmt: skip


def _message(answer: httpx.Response) -> str:
    body = answer.json()
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message"))
    return str(body.get("detail", body) if isinstance(body, dict) else body)


def test_fields_that_set_work_are_bounded_and_translated_ones_are_not_overridden(
    stack_once: Stack, fake: FakeModelServer
) -> None:
    wrong = []
    with httpx.Client(base_url=stack_once.url, timeout=30) as client:
        for path, body, field, said in REFUSED:
            answer = client.post(path, json=body)
            message = _message(answer)
            if not 400 <= answer.status_code < 500 or not message.startswith(f"{field}: ") or said not in message:
                wrong.append(f"{path} {sorted(body)}: {answer.status_code} {message[:300]}")
    assert not wrong, "\n".join(wrong)
    assert fake.requests == []  # none of them reached the model server

    # Within the limits, a server's own fields are passed on beside the translated ones.
    with httpx.Client(base_url=stack_once.url, timeout=30) as client:
        answer = client.post("/v1/responses", json={"input": "hi", "max_output_tokens": 10, "min_tokens": 2,
                                                    "ignore_eos": True, "top_k": 5})  # fmt: skip
        assert answer.status_code == 200, answer.text
        sent = fake.requests[-1]
        assert sent["messages"] == [{"role": "user", "content": "hi"}] and sent["max_tokens"] == 10
        assert (sent["min_tokens"], sent["ignore_eos"], sent["top_k"]) == (2, True, 5)
        assert "n" not in sent and "max_completion_tokens" not in sent
        # What the response keeps as its input is what the model was asked.
        items = client.get(f"/v1/responses/{answer.json()['id']}/input_items").json()["data"]
        assert [item["content"][0]["text"] for item in items] == ["hi"]
        chat = client.post("/v1/chat/completions", json={"messages": [USER], "best_of": 2, "max_tokens": 5})
        assert chat.status_code == 200, chat.text
        assert (fake.requests[-1]["best_of"], fake.requests[-1]["max_tokens"]) == (2, 5)


def test_a_batch_line_is_held_to_the_same_bounds(stack_once: Stack, fake: FakeModelServer) -> None:
    good = chat_line("good", "hi")
    greedy = chat_line("greedy", "hi")
    greedy["body"]["min_tokens"] = HUGE
    responses = {"custom_id": "resp", "method": "POST", "url": "/v1/responses",
                 "body": {"input": "hi", "messages": [USER]}}  # fmt: skip
    content = b"\n".join(json.dumps(line).encode() for line in (good, greedy, responses)) + b"\n"
    answer = httpx.post(f"{stack_once.url}/v1/files", files={"file": ("in.jsonl", content)},
                        data={"purpose": "batch"}, timeout=30)  # fmt: skip
    assert answer.status_code == 400, answer.text
    message = answer.json()["error"]["message"]
    assert "2 invalid line(s)" in message
    assert "line 2: body: min_tokens: 1000000000; at most" in message and "MAX_TOKENS_LIMIT" in message
    assert "line 3: body: messages: not a field of /v1/responses" in message


REGISTRY = json.dumps({"models": [{"name": "small", "url": "{url}"}, {"name": "large", "url": "{url}"}],
                       "default": "small"})  # fmt: skip


def test_fallbacks_name_models_of_the_registry_on_every_endpoint(
    make_stack: StackFactory, broker_env: dict[str, str], fake: FakeModelServer
) -> None:
    if not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("once is enough: a request's fallbacks are checked before any broker is asked")
    stack = make_stack(MODELS=REGISTRY.replace("{url}", fake.url))
    unknown = {"fallbacks": ["no-such-model"]}
    with httpx.Client(base_url=stack.url, timeout=30) as client:
        for path, body in (("/v1/chat/completions", {"messages": [USER]}), ("/v1/responses", {"input": "hi"}),
                           ("/v1/embeddings", {"input": "hi"})):  # fmt: skip
            answer = client.post(path, json={**body, **unknown})
            assert answer.status_code == 404 and _message(answer).startswith("fallbacks: "), (path, answer.text)
        assert fake.requests == []
        # A known model: a response may fall back to it; an embedding is its model's alone.
        assert client.post("/v1/responses", json={"input": "hi", "fallbacks": ["large"]}).status_code == 200
        refused = client.post("/v1/embeddings", json={"input": "hi", "fallbacks": ["large"]})
        assert refused.status_code == 422 and _message(refused).startswith("fallbacks: "), refused.text
        assert client.post("/v1/embeddings", json={"input": "hi", "fallbacks": []}).status_code == 200
