"""The Responses API's WebSocket mode: one connection, one response after another, as the
``openai`` SDK's ``client.responses.connect()`` speaks it; conversations kept on the
connection (store: false), what is refused (no key, another tenant's response, bad
events), and the tenant's quotas per response.create."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.responses import ResponsesServerEvent
from pydantic import TypeAdapter
from websockets.exceptions import ConnectionClosedOK, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from testing.fake_model_server import FakeModelServer
from tests.conftest import Stack, StackFactory

pytestmark = pytest.mark.integration

TENANTS = """
tenants:
  - name: research
    keys: ["key-research"]
  - name: product
    keys: ["key-product"]
  - name: tight
    keys: ["key-tight"]
    quotas: {requests_per_minute: 2}
"""
SERVER_EVENT: TypeAdapter[Any] = TypeAdapter(ResponsesServerEvent)
TERMINAL = {"response.completed", "response.incomplete", "response.failed", "error"}


def tenant_stack(make_stack: StackFactory, tmp_path: Path, broker_env: dict[str, str], **env: str) -> Stack:
    if not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("once is enough: the WebSocket mode is the API's, the same on either broker")
    keys_file = tmp_path / "tenants.yaml"
    keys_file.write_text(TENANTS)
    return make_stack(API_KEYS="key-default", API_KEYS_FILE=str(keys_file), **env)


def sdk(stack: Stack, key: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{stack.url}/v1", api_key=key, max_retries=0, timeout=30, _strict_response_validation=True
    )


def ws(stack: Stack, key: str | None) -> ClientConnection:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return connect(f"{stack.url.replace('http', 'ws', 1)}/v1/responses", additional_headers=headers, open_timeout=10)


def turn(connection: ClientConnection, event: dict[str, Any] | str) -> list[dict[str, Any]]:
    """Send one event; the events that answer it, up to its terminal one."""
    connection.send(event if isinstance(event, str) else json.dumps({"type": "response.create", **event}))
    got: list[dict[str, Any]] = []
    while not got or got[-1]["type"] not in TERMINAL:
        got.append(json.loads(connection.recv(timeout=30)))
    return got


def test_the_sdk_runs_responses_one_after_another_and_continues_a_store_false_one(
    make_stack: StackFactory, tmp_path: Path, broker_env: dict[str, str], fake: FakeModelServer
) -> None:
    stack = tenant_stack(make_stack, tmp_path, broker_env)
    client = sdk(stack, "key-research")
    with client.responses.connect() as connection:
        connection.response.create(model="fake-model", input="one two", store=False)
        first = read_response(connection)
        assert first.status == "completed" and first.output_text == "echo: one two" and first.store is False
        connection.response.create(model="fake-model", input="three", store=False, previous_response_id=first.id)
        second = read_response(connection)
        assert second.output_text == "echo: three" and second.previous_response_id == first.id
    # The conversation came from the connection itself: nothing of a store: false
    # response is in Redis.
    assert fake.completions[-1]["messages"] == [
        {"role": "user", "content": "one two"},
        {"role": "assistant", "content": "echo: one two"},
        {"role": "user", "content": "three"},
    ]
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    # Another connection has no such response.
    with ws(stack, "key-research") as other:
        (error,) = turn(other, {"model": "fake-model", "store": False, "previous_response_id": second.id, "input": "x"})
    assert error["status"] == 400 and error["error"]["code"] == "previous_response_not_found"
    assert error["error"]["param"] == "previous_response_id"


def read_response(connection: Any) -> Any:
    """The response the connection's events build, each event checked against the SDK's
    types; in order, numbered from 0."""
    numbers, kinds = [], []
    for event in connection:
        SERVER_EVENT.validate_python(event.to_dict())  # every field of the SDK's type, of its type
        numbers.append(event.sequence_number)
        kinds.append(event.type)
        if event.type in ("response.completed", "response.incomplete", "response.failed"):
            assert numbers == list(range(len(numbers)))
            assert kinds[:2] == ["response.created", "response.in_progress"]
            return event.response
        assert event.type != "error", event
    raise AssertionError(f"the connection closed after {kinds}")


def test_a_failed_continuation_evicts_and_bad_events_leave_the_connection_usable(
    make_stack: StackFactory, tmp_path: Path, broker_env: dict[str, str], fake: FakeModelServer
) -> None:
    stack = tenant_stack(make_stack, tmp_path, broker_env, MAX_BODY_BYTES="65536")
    with ws(stack, "key-research") as connection:
        first = turn(connection, {"model": "fake-model", "store": False, "input": "remember"})[-1]["response"]
        output = {"type": "function_call_output", "call_id": "call_nobody_made", "output": "42"}
        (failed,) = turn(connection, {"model": "fake-model", "store": False, "previous_response_id": first["id"],
                                      "input": [output]})  # fmt: skip
        assert failed["status"] == 422 and failed["error"]["message"].startswith("input[0].call_id:")
        (evicted,) = turn(connection, {"model": "fake-model", "store": False, "previous_response_id": first["id"],
                                       "input": "again"})  # fmt: skip
        assert evicted["error"]["code"] == "previous_response_not_found"
        deep = {"model": "fake-model", "input": "x", "metadata": {"k": "v"}, "n": [[[[[[[[[[]]]]]]]]]]}
        for _ in range(70):
            deep = {"nested": deep}
        bad = {
            "not JSON": "{",
            "a list": "[]",
            "another event": json.dumps({"type": "response.cancel"}),
            "a lone surrogate": '{"type": "response.create", "model": "fake-model", "input": "\\ud800"}',
            "deep nesting": json.dumps({"type": "response.create", "model": "fake-model", "input": "x", "d": deep}),
            "a huge message": json.dumps({"type": "response.create", "input": "x" * 70_000}),
            "no input": json.dumps({"type": "response.create", "model": "fake-model"}),
            "a wrong type": json.dumps({"type": "response.create", "model": "fake-model", "input": 7}),
            "background": json.dumps(
                {"type": "response.create", "model": "fake-model", "input": "x", "background": True}
            ),
        }
        for what, event in bad.items():
            (error,) = turn(connection, event)
            assert error["type"] == "error" and 400 <= error["status"] < 500, (what, error)
            assert error["error"]["message"] and isinstance(error["error"]["code"], str), (what, error)
        named = {what: turn(connection, event)[0]["error"]["message"] for what, event in bad.items()}
        assert named["a lone surrogate"].startswith("event.input") and named["deep nesting"].startswith("event.d")
        assert "input: required" in named["no input"] and named["a wrong type"].startswith("input")
        assert named["background"].startswith("background") and "65536" in named["a huge message"]
        # After all of it, the connection still answers.
        assert turn(connection, {"model": "fake-model", "input": "still here"})[-1]["type"] == "response.completed"


def test_the_upgrade_needs_a_key_and_another_tenants_response_is_a_missing_one(
    make_stack: StackFactory, tmp_path: Path, broker_env: dict[str, str], fake: FakeModelServer
) -> None:
    stack = tenant_stack(make_stack, tmp_path, broker_env)
    for key in (None, "key-nobody"):
        with pytest.raises(InvalidStatus) as refused:
            ws(stack, key)
        assert refused.value.response.status_code == 401
        assert json.loads(refused.value.response.body)["error"]["type"] == "authentication_error"
    with ws(stack, "key-research") as connection:
        stored = turn(connection, {"model": "fake-model", "input": "kept"})[-1]["response"]
    missing = "resp_" + "0" * 32
    with ws(stack, "key-product") as connection:
        answers = [
            turn(connection, {"model": "fake-model", "previous_response_id": prior, "input": "go on"})[0]
            for prior in (stored["id"], missing)
        ]
    theirs, unknown = (json.dumps(a).replace(stored["id"], "ID").replace(missing, "ID") for a in answers)
    assert theirs == unknown and answers[0]["error"]["code"] == "previous_response_not_found"
    # Its own tenant goes on from it on any connection: a stored response is read from Redis.
    with ws(stack, "key-research") as connection:
        events = turn(connection, {"model": "fake-model", "previous_response_id": stored["id"], "input": "more"})
    assert events[-1]["type"] == "response.completed"
    assert [m["content"] for m in fake.completions[-1]["messages"]] == ["kept", "echo: kept", "more"]


def test_a_conversation_is_read_and_kept_as_over_http_and_another_tenants_is_a_missing_one(
    make_stack: StackFactory, tmp_path: Path, broker_env: dict[str, str], fake: FakeModelServer
) -> None:
    stack = tenant_stack(make_stack, tmp_path, broker_env)
    research = sdk(stack, "key-research")
    conversation = research.conversations.create(items=[{"role": "user", "content": "My name is Ada."}])
    with ws(stack, "key-research") as connection:
        events = turn(connection, {"model": "fake-model", "conversation": conversation.id, "input": "Who am I?"})
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["conversation"] == {"id": conversation.id}
    # Its items were sent before the input, and the turn was added to it.
    assert [m["content"] for m in fake.completions[-1]["messages"]] == ["My name is Ada.", "Who am I?"]
    items = research.conversations.items.list(conversation.id, order="asc").data
    assert [item.content[0].text for item in items] == ["My name is Ada.", "Who am I?", "echo: Who am I?"]
    # Another tenant naming it is answered as naming one that does not exist; nothing runs.
    missing = "conv_" + "0" * 48
    asked = len(fake.completions)
    with ws(stack, "key-product") as connection:
        answers = [turn(connection, {"model": "fake-model", "conversation": given, "input": "x"})
                   for given in (conversation.id, missing)]  # fmt: skip
    theirs, unknown = (json.dumps(a).replace(conversation.id, "ID").replace(missing, "ID") for a in answers)
    assert theirs == unknown and answers[0][0]["type"] == "error" and answers[0][0]["status"] == 404
    assert len(fake.completions) == asked
    assert len(research.conversations.items.list(conversation.id).data) == 3


def test_each_response_create_is_a_request_under_the_tenants_quota(
    make_stack: StackFactory, tmp_path: Path, broker_env: dict[str, str], fake: FakeModelServer
) -> None:
    stack = tenant_stack(make_stack, tmp_path, broker_env)
    with ws(stack, "key-tight") as connection:  # the upgrade is its first request of the minute
        assert turn(connection, {"model": "fake-model", "input": "one"})[-1]["type"] == "response.completed"
        (limited,) = turn(connection, {"model": "fake-model", "input": "two"})
    assert limited["status"] == 429 and limited["error"]["code"] == "rate_limit_exceeded"
    assert [m["content"] for m in fake.completions[-1]["messages"]] == ["one"]  # the refused one never ran


def test_a_connection_ends_at_its_time_limit_with_its_error(
    make_stack: StackFactory, broker_env: dict[str, str]
) -> None:
    if not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("once is enough: the WebSocket mode is the API's, the same on either broker")
    stack = make_stack(workers=0, RESPONSES_WEBSOCKET_SECONDS="1")
    with ws(stack, "any") as connection:
        error = json.loads(connection.recv(timeout=30))
        assert error["type"] == "error" and error["error"]["code"] == "websocket_connection_limit_reached"
        with pytest.raises(ConnectionClosedOK) as closed:
            connection.recv(timeout=30)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
