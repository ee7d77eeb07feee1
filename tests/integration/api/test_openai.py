"""The official openai client, unchanged but for base_url, against the gateway."""

from __future__ import annotations

import openai
import pytest

from testing.fake_model_server import FakeModelServer
from testing.openai_sdk import client
from tests.conftest import Stack

pytestmark = pytest.mark.integration


def test_chat_completions_create(stack: Stack, fake: FakeModelServer) -> None:
    answer = client(stack).chat.completions.create(
        model="fake-model",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is AI?"}],
        max_tokens=50,
        temperature=0.3,
        top_p=0.9,
        seed=5,
        stop="zzz",
    )
    assert answer.choices[0].message.content == "echo: What is AI?"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None and answer.usage.total_tokens > 0
    assert answer.model == "fake-model" and answer.id.startswith("chatcmpl-")
    (sent,) = fake.completions
    mapped = {k: sent.get(k) for k in ("model", "max_tokens", "temperature", "top_p", "seed", "stop")}
    assert mapped == {
        "model": "fake-model",
        "max_tokens": 50,
        "temperature": 0.3,
        "top_p": 0.9,
        "seed": 5,
        "stop": ["zzz"],
    }
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}


def test_sampling_left_unset_is_not_sent_so_the_servers_defaults_apply(stack: Stack, fake: FakeModelServer) -> None:
    sdk = client(stack)
    sdk.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "x"}])
    sdk.completions.create(model="fake-model", prompt="x")
    for sent in fake.requests:
        assert not {"temperature", "top_p", "max_tokens", "seed", "stop", "n"} & sent.keys(), sent


def test_completions_create_is_a_raw_completion(stack: Stack, fake: FakeModelServer) -> None:
    answer = client(stack).completions.create(model="fake-model", prompt="Once upon a time", max_tokens=3)
    assert answer.choices[0].text == "echo: Once upon"
    assert answer.choices[0].finish_reason == "length"
    # The model server's own /v1/completions: no chat template, no messages.
    (sent,) = fake.raw_completions
    assert sent["prompt"] == "Once upon a time" and "messages" not in sent and fake.completions == []


def test_models_list_names_the_served_models(stack: Stack, fake: FakeModelServer) -> None:
    fake.models = ["qwen-7b", "llama-3-8b"]
    assert [model.id for model in client(stack).models.list()] == ["qwen-7b", "llama-3-8b"]


def test_idempotency_key_runs_the_job_once(stack: Stack, fake: FakeModelServer) -> None:
    ask = {"model": "fake-model", "messages": [{"role": "user", "content": "once"}]}
    headers = {"Idempotency-Key": "openai-key-1"}
    first = client(stack).chat.completions.create(**ask, extra_headers=headers)
    second = client(stack).chat.completions.create(**ask, extra_headers=headers)
    assert first.id == second.id == "chatcmpl-openai-key-1"
    assert len(fake.completions) == 1
    with pytest.raises(openai.ConflictError, match="another body"):
        client(stack).chat.completions.create(**{**ask, "temperature": 0.1}, extra_headers=headers)


@pytest.mark.parametrize(
    ("call", "error"),
    [
        ({"model": "gpt-model"}, openai.NotFoundError),
        ({"model": "fake-model", "temperature": 5}, openai.BadRequestError),
        ({"model": "fake-model", "messages": []}, openai.BadRequestError),
    ],
    ids=["unknown-model", "bad-temperature", "no-messages"],
)
def test_errors_raise_the_openai_exception_classes(
    stack: Stack, fake: FakeModelServer, call: dict, error: type[openai.APIStatusError]
) -> None:
    fake.strict_models = True
    ask = {"messages": [{"role": "user", "content": "x"}], **call}
    with pytest.raises(error) as caught:
        client(stack).chat.completions.create(**ask)
    body = caught.value.body
    assert isinstance(body, dict) and body["message"] and body["type"]


def test_model_server_down_is_a_502_in_openai_format(stack: Stack, fake: FakeModelServer) -> None:
    from testing.fake_model_server import Failure

    fake.failures = [Failure(500, {"error": {"message": "CUDA out of memory"}})] * 3
    with pytest.raises(openai.InternalServerError) as caught:
        client(stack).chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 502
    assert "CUDA out of memory" in caught.value.body["message"]
