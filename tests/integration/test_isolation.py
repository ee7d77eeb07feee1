"""Walls between tenants: a key reaches only its own jobs, batch lines, files, batches and
figures; another tenant's id is answered exactly as an id that does not exist; operators'
endpoints answer operators only; a batch line cancelled on its own ends as cancelled."""

from __future__ import annotations

import io
import json
import re
import socket
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import openai
import pytest

from api.jobs.queue import JobQueue
from api.main import create_app
from shared.config import Config
from shared.storage.batch_files import line_job_id
from testing.fake_model_server import FakeModelServer
from testing.load import wait_until
from testing.openai_sdk import chat_line, file_lines, jsonl, wait_until_finished
from tests.conftest import Stack, StackFactory

pytestmark = pytest.mark.integration

TENANTS = """
tenants:
  - name: alpha
    keys: ["alpha-key"]
  - name: beta
    keys: ["beta-key"]
  - name: ops
    admin: true
    keys: ["ops-key"]
"""
TOKEN = "scrape-token-1"


def walled_stack(make_stack: StackFactory, tmp_path: Path, **env: str) -> Stack:
    keys_file = tmp_path / "tenants.yaml"
    keys_file.write_text(TENANTS)
    return make_stack(API_KEYS_FILE=str(keys_file), METRICS_TOKEN=TOKEN, **env)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def sdk(stack: Stack, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.url}/v1", api_key=key, max_retries=0, timeout=30,
                         _strict_response_validation=True)  # fmt: skip


def _answer(response: httpx.Response, *ids: str) -> tuple[int, str]:
    """An answer as a client compares it: its status and body, the ids asked for made alike."""
    text = response.text
    for given in ids:
        text = text.replace(given, "<id>")
    return response.status_code, text


# Every route of the app that takes an id: found from the app itself (its OpenAPI
# document lists every route of every included router), so that a route added later is
# covered, or this test says which id it needs. The organization's (/v1/organization/*)
# are no tenant's: every tenant's key is refused there (tests/integration/api/test_organization.py);
# nor is a model (/v1/models/{model}), the registry's (one a project may not use answers
# as an unknown one: tests/integration/api/test_model_permissions.py).
ROUTES = sorted(
    (method.upper(), path)
    for path, operations in create_app(Config(_env_file=None)).openapi()["paths"].items()  # type: ignore[call-arg]
    if "{" in path and not path.startswith("/v1/organization/") and path != "/v1/models/{model}"
    for method in operations
)


def test_another_tenants_ids_answer_as_unknown_ones_on_every_route(
    make_stack: StackFactory, fake: FakeModelServer, tmp_path: Path, broker_env: dict[str, str]
) -> None:
    stack = walled_stack(make_stack, tmp_path, BATCH_POLL_SECONDS="0.2")
    alpha, beta = auth("alpha-key"), auth("beta-key")
    url = stack.url
    # alpha's resources: a job, a batch's line (a job too), input and output files, a batch.
    job = httpx.post(f"{url}/generate", json={"job_id": "iso-job", "content": "alpha's"}, headers=alpha, timeout=30)
    assert job.status_code == 200 and job.json()["content"] == "echo: alpha's"
    client = sdk(stack, "alpha-key")
    input_id = client.files.create(file=("in.jsonl", io.BytesIO(jsonl([chat_line("line-0", "x")]))),
                                   purpose="batch").id  # fmt: skip
    batch = wait_until_finished(client, client.batches.create(input_file_id=input_id, endpoint="/v1/chat/completions",
                                                               completion_window="24h").id)  # fmt: skip
    assert batch.status == "completed" and batch.output_file_id
    response = client.responses.create(model="fake-model", input="alpha's")
    conversation = client.conversations.create(items=[{"role": "user", "content": "alpha's"}], metadata={"k": "v"})
    item = client.conversations.items.list(conversation.id).data[0]
    mine = {
        "job_id": ["iso-job", line_job_id(batch.id, "line-0")],
        "file_id": [input_id, batch.output_file_id],
        "batch_id": [batch.id],
        "response_id": [response.id],
        "conversation_id": [conversation.id],
        "item_id": [item.id],
    }
    unknown = {"job_id": "iso-none", "file_id": "file-000none", "batch_id": "batch_000none",
               "response_id": "resp_000none", "conversation_id": "conv_000none", "item_id": "msg_000none"}  # fmt: skip
    # What a route that takes a body is sent (a body it would refuse is answered before its ids are looked at).
    bodies = {
        ("POST", "/v1/conversations/{conversation_id}"): {"metadata": {"k": "beta's"}},
        ("POST", "/v1/conversations/{conversation_id}/items"): {"items": [{"role": "user", "content": "b"}]},
    }
    covered = set()
    for method, path in ROUTES:
        params = re.findall(r"{(\w+)}", path)
        for param in params:
            assert param in mine, f"{method} {path}: no id of alpha's for {{{param}}}: add one to this test"
        # Each id of alpha's for a route of one id; alpha's first ids together for a route of several.
        choices = [{params[0]: given} for given in mine[params[0]]] if len(params) == 1 else [
            {param: mine[param][0] for param in params}]  # fmt: skip

        def filled(ids: dict[str, str], path: str = path) -> str:
            for param, given in ids.items():
                path = path.replace("{" + param + "}", given)
            return f"{url}{path}"

        body = bodies.get((method, path))
        for ids in choices:
            given = list(ids.values())
            before = httpx.get(filled(ids).removesuffix("/cancel"), headers=alpha, timeout=30)
            missing = httpx.request(method, filled({p: unknown[p] for p in ids}), headers=beta, json=body)
            theirs = httpx.request(method, filled(ids), headers=beta, json=body)
            assert missing.status_code == 404, (method, path, missing.text)
            assert _answer(theirs, *given) == _answer(missing, *(unknown[p] for p in ids)), (method, path, given)
            after = httpx.get(filled(ids).removesuffix("/cancel"), headers=alpha, timeout=30)
            assert after.status_code == 200 and _answer(after) == _answer(before), (method, path, given)
            # No key: 401; an admin reads it (a job naming its tenant), as alpha does.
            assert httpx.request(method, filled(ids), json=body).status_code == 401, (method, path)
            if method == "GET":
                named = {"job_id", "response_id", "conversation_id"} & set(ids)
                whose = {"tenant": "alpha"} if named else None
                admin_read = httpx.get(filled(ids), params=whose, headers=auth("ops-key"))
                assert _answer(admin_read) == _answer(before), (path, given)
            covered.add((method, path))
    # jobs (2), files (3), batches (2), responses (4), conversations (3), their items (4)
    assert covered == set(ROUTES) and len(ROUTES) >= 18
    # The lists: beta's are its own (empty), alpha's hold alpha's.
    assert httpx.get(f"{url}/v1/files", headers=beta).json()["data"] == []
    assert httpx.get(f"{url}/v1/batches", headers=beta).json()["data"] == []
    assert input_id in {f["id"] for f in httpx.get(f"{url}/v1/files", headers=alpha).json()["data"]}
    # Usage: naming alpha is answered as naming a tenant that does not exist.
    theirs = httpx.get(f"{url}/usage?tenant=alpha", headers=beta)
    assert _answer(theirs, "alpha") == _answer(httpx.get(f"{url}/usage?tenant=nobody", headers=beta), "nobody")
    assert theirs.status_code == 403
    # An admin reads any tenant's, naming it; without a key, nothing.
    admin = httpx.get(f"{url}/jobs/iso-job?tenant=alpha", headers=auth("ops-key")).json()
    assert admin["tenant"] == "alpha" and admin["result"]["content"] == "echo: alpha's"
    assert httpx.get(f"{url}/jobs/iso-job?tenant=alpha", headers=beta).status_code == 404
    assert httpx.get(f"{url}/jobs/iso-job").status_code == 401
    assert {b["id"] for b in httpx.get(f"{url}/v1/batches", headers=auth("ops-key")).json()["data"]} >= {batch.id}


def test_a_message_stream_is_its_tenants_alone_under_any_key_and_the_counts_need_a_key(
    make_once: StackFactory, fake: FakeModelServer, tmp_path: Path
) -> None:
    stack = walled_stack(make_once, tmp_path)
    url = f"{stack.url}/v1/messages"

    def asked(text: str) -> dict[str, Any]:
        return {"model": "m", "max_tokens": 20, "stream": True, "messages": [{"role": "user", "content": text}]}

    alpha = {"x-api-key": "alpha-key", "Idempotency-Key": "shared-msg"}
    alphas = httpx.post(url, json=asked("alphasecret"), headers=alpha, timeout=30)
    assert alphas.status_code == 200 and "alphasecret" in alphas.text
    # beta names alpha's message and resumes it: it reads a message of its own, never alpha's.
    beta = {"x-api-key": "beta-key", "Idempotency-Key": "shared-msg", "Last-Event-ID": "2"}
    betas = httpx.post(url, json=asked("betaword"), headers=beta, timeout=30)
    assert betas.status_code == 200 and "alpha" not in betas.text and "betaword" in betas.text
    assert len(fake.completions) == 2
    # alpha's, read again, is still alpha's alone.
    again = httpx.post(url, json=asked("alphasecret"), headers={**alpha, "Last-Event-ID": "2"}, timeout=30)
    assert "alphasecret" in again.text and len(fake.completions) == 2
    # No key, or one that is none: refused on both routes, in Anthropic's shape.
    for path in ("", "/count_tokens"):
        body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
        for headers in ({}, {"x-api-key": "wrong"}, {"Authorization": "Bearer wrong"}):
            answer = httpx.post(f"{url}{path}", json=body, headers=headers, timeout=30)
            assert answer.status_code == 401 and answer.json()["error"]["type"] == "authentication_error"
    assert len(fake.completions) == 2 and fake.tokenized == []
    # Two keys that disagree (x-api-key and Authorization): neither is taken, whichever is valid.
    for path in ("", "/count_tokens"):
        body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
        for other in ("beta-key", "wrong"):
            for headers in ({"x-api-key": "alpha-key", **auth(other)}, {"x-api-key": other, **auth("alpha-key")}):
                answer = httpx.post(f"{url}{path}", json=body, headers=headers, timeout=30)
                assert answer.status_code == 401 and answer.json()["error"]["type"] == "authentication_error"
        # The same key in both (a client given it twice) is that key.
        same = httpx.post(f"{url}{path}", json=body, headers={"x-api-key": "alpha-key", **auth("alpha-key")})
        assert same.status_code == 200, same.text
    assert len(fake.completions) == 3 and len(fake.tokenized) >= 1


def queue_type(name: str, broker_env: dict[str, str]) -> dict[str, str]:
    """The setting for queues of type `name` (quorum queues are RabbitMQ's: skipped on Valkey)."""
    if name == "quorum" and not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("quorum queues are RabbitMQ's")
    return {"RABBIT_MQ_QUEUE_TYPE": name} if broker_env["RABBIT_MQ_HOST"] else {}


@pytest.mark.parametrize("queues", ["classic", "quorum"])
def test_the_same_job_id_from_two_tenants_is_two_jobs(
    make_stack: StackFactory, fake: FakeModelServer, tmp_path: Path, broker_env: dict[str, str], queues: str
) -> None:
    # A stream's reader that leaves cancels its job at once (no grace to come back).
    stack = walled_stack(make_stack, tmp_path, STREAM_LEAVE_GRACE="0", **queue_type(queues, broker_env))
    url = stack.url
    fake.latency = 0.5
    # beta takes the id first, without waiting; alpha's job of the same id is its own.
    taken = httpx.post(f"{url}/generate?wait=0", json={"job_id": "same-id", "content": "beta's"},
                       headers=auth("beta-key"))  # fmt: skip
    assert taken.status_code == 202 and taken.json()["tenant"] == "beta"
    own = httpx.post(f"{url}/generate", json={"job_id": "same-id", "content": "alpha's"}, headers=auth("alpha-key"),
                     timeout=30)  # fmt: skip
    assert own.status_code == 200 and own.json() == {"content": "echo: alpha's", "job_id": "same-id"}
    # beta joins a stream of that id, and leaves before its end: only beta's job is cancelled.
    fake.latency = 0.0
    fake.chunk_delay = 0.3
    with httpx.stream("POST", f"{url}/generate", json={"job_id": "stream-id", "content": "one two three four"},
                      headers=auth("alpha-key"), timeout=30) as alphas:  # fmt: skip
        with httpx.stream("POST", f"{url}/generate", json={"job_id": "stream-id", "content": "other", "stream": True},
                          headers=auth("beta-key"), timeout=30) as betas:  # fmt: skip
            next(betas.iter_lines())
        alphas.read()
    assert alphas.status_code == 200 and alphas.json()["content"] == "echo: one two three four"
    for key, content in (("alpha-key", "echo: one two three four"), ("beta-key", None)):
        status = httpx.get(f"{url}/jobs/stream-id", headers=auth(key)).json()
        assert (status["result"] or {}).get("content") == content, status
    wait_until(lambda: httpx.get(f"{url}/jobs/stream-id", headers=auth("beta-key")).json()["status"] == "cancelled",
               30, "beta's stream to be cancelled")  # fmt: skip
    betas_job = httpx.get(f"{url}/jobs/same-id", headers=auth("beta-key")).json()
    wait_until(lambda: httpx.get(f"{url}/jobs/same-id", headers=auth("beta-key")).json()["status"] == "succeeded",
               30, "beta's job")  # fmt: skip
    betas_job = httpx.get(f"{url}/jobs/same-id", headers=auth("beta-key")).json()
    assert betas_job["tenant"] == "beta" and betas_job["result"]["content"] == "echo: beta's"


def test_operators_endpoints_answer_admin_keys_and_the_scrape_token_only(
    make_stack: StackFactory, fake: FakeModelServer, tmp_path: Path
) -> None:
    stack = walled_stack(make_stack, tmp_path)
    for path in ("/metrics", "/scaling"):
        assert httpx.get(f"{stack.url}{path}", headers=auth("ops-key")).status_code == 200
        assert httpx.get(f"{stack.url}{path}", headers=auth(TOKEN)).status_code == 200
        tenant = httpx.get(f"{stack.url}{path}", headers=auth("beta-key"))
        assert tenant.status_code == 403 and "admin keys and METRICS_TOKEN" in tenant.json()["detail"]
        assert httpx.get(f"{stack.url}{path}").status_code == 401
        assert httpx.get(f"{stack.url}{path}", headers=auth("wrong")).status_code == 401
    # The token is for those alone: it is no tenant's key.
    assert httpx.post(f"{stack.url}/generate", json={"content": "x"}, headers=auth(TOKEN)).status_code == 401


def test_tenants_show_a_key_its_own_tenant_and_an_admin_every_one_never_a_key(
    make_stack: StackFactory, fake: FakeModelServer, tmp_path: Path
) -> None:
    stack = walled_stack(make_stack, tmp_path)
    mine = httpx.get(f"{stack.url}/tenants", headers=auth("alpha-key"))
    assert mine.status_code == 200
    answer = mine.json()
    assert (answer["tenant"], answer["admin"], answer["keyed"]) == ("alpha", False, True)
    assert [(t["name"], t["admin"], t["keys"], t["source"]) for t in answer["data"]] == [
        ("alpha", False, 1, "keys_file")
    ]
    every = httpx.get(f"{stack.url}/tenants", headers=auth("ops-key")).json()
    assert every["tenant"] == "ops" and every["admin"] is True
    assert [t["name"] for t in every["data"]] == ["alpha", "beta", "ops"]
    quotas = every["data"][0]["quotas"]
    assert quotas["max_priority"] == stack.config.tenant_max_priority and "requests_per_minute" in quotas
    assert not {"alpha-key", "beta-key", "ops-key"} & set(str(every).split("'"))
    assert httpx.get(f"{stack.url}/tenants").status_code == 401
    # The scrape token reads figures, it is no tenant's key.
    assert httpx.get(f"{stack.url}/tenants", headers=auth(TOKEN)).status_code == 401


@pytest.mark.parametrize("queues", ["classic", "quorum"])
def test_a_batch_line_cancelled_on_its_own_ends_as_cancelled_and_the_batch_completes(
    make_stack: StackFactory, fake: FakeModelServer, tmp_path: Path, broker_env: dict[str, str], queues: str
) -> None:
    stack = walled_stack(make_stack, tmp_path, BATCH_POLL_SECONDS="0.2", BATCH_LINES_IN_FLIGHT="2",
                         **queue_type(queues, broker_env))  # fmt: skip
    fake.latency = 0.5
    client = sdk(stack, "alpha-key")
    lines = [chat_line(f"line-{n}", f"q{n}") for n in range(6)]
    input_id = client.files.create(file=("in.jsonl", io.BytesIO(jsonl(lines))), purpose="batch").id
    batch = client.batches.create(input_file_id=input_id, endpoint="/v1/chat/completions", completion_window="24h")
    line = line_job_id(batch.id, "line-1")
    wait_until(lambda: httpx.get(f"{stack.url}/jobs/{line}", headers=auth("alpha-key")).status_code == 200, 30,
               "the line to be queued")  # fmt: skip
    # Another tenant cannot touch it; its owner cancels it.
    assert httpx.delete(f"{stack.url}/jobs/{line}", headers=auth("beta-key")).status_code == 404
    cancelled = httpx.delete(f"{stack.url}/jobs/{line}", headers=auth("alpha-key"))
    assert cancelled.status_code in (200, 409), cancelled.text  # 409: it had finished already
    # Another tenant's interactive job is answered meanwhile.
    other = httpx.post(f"{stack.url}/generate", json={"content": "beside"}, headers=auth("beta-key"), timeout=30)
    assert other.status_code == 200
    done = wait_until_finished(client, batch.id)
    assert done.status == "completed", done
    output, errors = file_lines(client, done.output_file_id), file_lines(client, done.error_file_id)
    ids = sorted(record["custom_id"] for record in output + errors)
    assert ids == sorted(f"line-{n}" for n in range(6))  # every line once
    if cancelled.status_code == 200:
        (error,) = errors
        assert error["custom_id"] == "line-1" and error["response"]["status_code"] == 409
        assert "cancelled" in error["response"]["body"]["error"]["message"]
    # Nothing left queued: the line was not queued again and again.
    queue = JobQueue(stack.config)
    try:
        assert queue.depths([stack.config.queue_name]) == {stack.config.queue_name: 0}
    finally:
        queue.close()
    assert len(fake.completions) <= 7  # 6 lines and the interactive job, none twice over


@pytest.fixture
def make_once(make_stack: StackFactory, broker_env: dict[str, str]) -> StackFactory:
    """`make_stack` for what is decided before any broker is asked (input read, keys
    checked): run on RabbitMQ alone, once being enough."""
    if not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("once is enough: decided before any broker is asked")
    return make_stack


# No input gets a 5xx: each a 4xx naming the field, before anything is queued.

EVIL_BODIES: list[tuple[str, str, bytes, int, str]] = [
    ("NaN temperature", "/generate", b'{"content": "x", "meta": {"temperature": NaN}}', 422, "meta.temperature"),
    ("Infinity temperature", "/generate", b'{"content": "x", "meta": {"temperature": Infinity}}', 422,
     "meta.temperature"),
    ("1e309 temperature", "/generate", b'{"content": "x", "meta": {"temperature": 1e309}}', 422, "meta.temperature"),
    ("1e309 tokens_limit", "/generate", b'{"content": "x", "meta": {"tokens_limit": 1e309}}', 422,
     "meta.tokens_limit"),
    ("a huge integer", "/generate", b'{"content": "x", "meta": {"tokens_limit": 1' + b"0" * 400 + b"}}", 422,
     "tokens_limit"),
    ("a lone surrogate in content", "/generate", b'{"content": "a\\udfffb"}', 422, "content"),
    ("a lone surrogate in a message", "/chat_completion",
     b'{"messages": [{"role": "user", "content": "\\ud800"}]}', 422, "messages.0.content"),
    ("a lone surrogate in job_id", "/generate", b'{"job_id": "\\udfff", "content": "x"}', 422, "job_id"),
    ("a lone surrogate in a key", "/generate", b'{"content": "x", "\\udfff": 1}', 422, "a key"),
    ("OpenAI: NaN temperature", "/v1/chat/completions",
     b'{"messages": [{"role": "user", "content": "x"}], "temperature": NaN}', 422, "temperature"),
    ("OpenAI: a lone surrogate in metadata", "/v1/chat/completions",
     b'{"messages": [{"role": "user", "content": "x"}], "metadata": {"k": "\\udc00"}}', 422, "metadata.k"),
    ("OpenAI: nesting 1,000 deep", "/v1/chat/completions",
     b'{"messages": [{"role": "user", "content": "x"}], "response_format": ' + b"[" * 1000 + b"]" * 1000 + b"}",
     422, "MAX_JSON_DEPTH"),
    ("nesting 100 deep", "/generate", b'{"content": "x", "extra": ' + b"[" * 100 + b"]" * 100 + b"}", 422,
     "MAX_JSON_DEPTH"),
    # Anthropic's: a 400 (its invalid_request_error) naming the field.
    ("Anthropic: NaN temperature", "/v1/messages",
     b'{"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "temperature": NaN}', 400,
     "temperature"),
    ("Anthropic: 1e309 max_tokens", "/v1/messages",
     b'{"model": "m", "max_tokens": 1e309, "messages": [{"role": "user", "content": "x"}]}', 400, "max_tokens"),
    ("Anthropic: max_tokens missing", "/v1/messages", b'{"model": "m", "messages": [{"role": "user", "content": "x"}]}',
     400, "max_tokens: Field required"),
    ("Anthropic: max_tokens negative", "/v1/messages",
     b'{"model": "m", "max_tokens": -1, "messages": [{"role": "user", "content": "x"}]}', 400, "max_tokens"),
    ("Anthropic: a lone surrogate in a block", "/v1/messages",
     b'{"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "text",'
     b' "text": "\\ud800"}]}]}',
     400, "messages.0.content.0.text"),
    ("Anthropic: nesting 1,000 deep in a tool's schema", "/v1/messages/count_tokens",
     b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [{"name": "f", "input_schema": '
     + b"[" * 1000 + b"]" * 1000 + b"}]}", 400, "MAX_JSON_DEPTH"),
    ("a lone surrogate in batch metadata", "/v1/batches",
     b'{"input_file_id": "file-x", "endpoint": "/v1/completions", "metadata": {"k": "\\udfff"}}', 422,
     "metadata.k"),
]  # fmt: skip


def test_values_json_carries_but_text_cannot_are_4xx_naming_the_field(
    make_once: StackFactory, fake: FakeModelServer
) -> None:
    stack = make_once()
    wrong = []
    with httpx.Client(base_url=stack.url, timeout=30) as client:
        for name, path, body, status, field in EVIL_BODIES:
            answer = client.post(path, content=body, headers={"content-type": "application/json"})
            if answer.status_code != status or field not in answer.text:
                wrong.append(f"{name}: {answer.status_code} {answer.text[:300]}")
        for query, status in (("end=0001-01-01", 422), ("start=0001-01-01", 200), ("end=9999-12-31", 200)):
            answer = client.get(f"/usage?{query}")
            if answer.status_code != status:
                wrong.append(f"/usage?{query}: {answer.status_code} {answer.text[:300]}")
        # The job with an id asked for before is still readable.
        assert client.post("/generate", json={"job_id": "after-evil", "content": "fine"}).status_code == 200
        assert client.get("/jobs/after-evil").json()["result"]["content"] == "echo: fine"
    assert not wrong, "\n".join(wrong)
    assert len(fake.completions) == 1  # only the fine one reached the model


def test_a_batch_file_with_lines_the_gateway_cannot_carry_is_refused_naming_them(
    make_once: StackFactory, fake: FakeModelServer
) -> None:
    stack = make_once(MAX_BODY_BYTES="4096")
    good = json.dumps(chat_line("good", "x")).encode()
    bad = [
        good.replace(b'"good"', b'"\\udfff"'),  # a lone surrogate in custom_id
        good.replace(b'"x"', b'"' + b"y" * 5000 + b'"').replace(b'"good"', b'"big"'),  # over MAX_BODY_BYTES
        good.replace(b'"good"', b'"deep"').replace(b'"x"}]', b'"x", "extra": ' + b"[" * 200 + b"]" * 200 + b"}]"),
        good.replace(b'"good"', b'"nan"').replace(b'"messages"', b'"temperature": NaN, "messages"'),
    ]
    content = b"\n".join([good, *bad]) + b"\n"
    answer = httpx.post(f"{stack.url}/v1/files", files={"file": ("in.jsonl", content)}, data={"purpose": "batch"})
    assert answer.status_code == 400, answer.text
    message = answer.json()["error"]["message"]
    assert "4 invalid line(s)" in message
    for number, why in ((2, "custom_id: holds a lone UTF-16 surrogate"), (3, "MAX_BODY_BYTES"),
                        (4, "MAX_JSON_DEPTH"), (5, "temperature: NaN is not a finite number")):  # fmt: skip
        assert f"line {number}: " in message and why in message, (number, why, message)
    assert fake.completions == []


# Early answers: read by clients that send their whole body first, on a connection they close.


@pytest.mark.parametrize("client", ["urllib", "requests"])
def test_a_413_reaches_a_client_that_sends_connection_close(stack: Stack, client: str) -> None:
    body = json.dumps({"content": "x" * (5 * 1024 * 1024)}).encode()
    if client == "urllib":
        import urllib.error
        import urllib.request

        sent = urllib.request.Request(f"{stack.url}/generate", data=body, headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(sent, timeout=30)
        status, text = refused.value.code, refused.value.read().decode()
    else:
        import requests

        answer = requests.post(f"{stack.url}/generate", data=body, timeout=30,
                               headers={"Content-Type": "application/json", "Connection": "close"})  # fmt: skip
        status, text = answer.status_code, answer.text
    assert status == 413 and "MAX_BODY_BYTES" in text


def test_an_upload_without_a_key_is_refused_on_its_headers(
    make_once: StackFactory, fake: FakeModelServer, tmp_path: Path
) -> None:
    stack = walled_stack(make_once, tmp_path)
    host, port = stack.url.removeprefix("http://").split(":")
    # 150 MB announced, 1 MB sent: the answer comes without the rest (it used to be read
    # in full, and spooled to disk, before the key was looked at).
    boundary = "b0undary"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="in.jsonl"\r\n\r\n'.encode()
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall(
            f"POST /v1/files HTTP/1.1\r\nHost: {host}\r\nContent-Length: {150 * 1024 * 1024}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n".encode()
            + head
            + b"x" * (1024 * 1024)
        )
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = conn.recv(65536)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    # A client that waits for "100 Continue" (curl, for large bodies) gets the 401 instead,
    # and sends none of its body.
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall(
            f"POST /v1/files HTTP/1.1\r\nHost: {host}\r\nContent-Length: {150 * 1024 * 1024}\r\n"
            f"Expect: 100-continue\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n\r\n".encode()
        )
        first = conn.recv(65536)
    assert first.startswith(b"HTTP/1.1 401"), first[:200]


def test_model_names_a_client_makes_up_add_no_metric_series(stack: Stack, fake: FakeModelServer) -> None:
    # No registry: every name goes to the one model server, and is counted as its.
    for n in range(30):
        body = {"content": "x", "meta": {"model": f"made-up-{n}"}}
        assert httpx.post(f"{stack.url}/generate", json=body, timeout=30).status_code == 200
    metrics = httpx.get(f"{stack.url}/metrics", timeout=10).text
    assert "made-up" not in metrics
    assert re.search(r'llm_api_jobs_total\{model="default",outcome="succeeded",tenant="default"\} [1-9]', metrics)


# The whole surface fuzzed with the values that used to cost a 5xx: no input gets one.

BODIES: dict[str, dict[str, Any]] = {
    "/generate": {"job_id": "fuzz", "content": "x", "meta": {"temperature": 0.5, "tokens_limit": 5,
                                                            "stop_words": ["a"], "model": "m"}},
    "/chat_completion": {"messages": [{"role": "user", "content": "x"}], "meta": {"temperature": 0.5}},
    "/v1/chat/completions": {"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 0.5,
                             "max_tokens": 5, "metadata": {"k": "v"}, "tools": [], "stop": ["a"]},
    "/v1/completions": {"model": "m", "prompt": "x", "temperature": 0.5, "max_tokens": 5},
    "/v1/batches": {"input_file_id": "file-x", "endpoint": "/v1/completions", "completion_window": "24h",
                    "metadata": {"k": "v"}},
    "/v1/responses": {"model": "m", "instructions": "i", "max_output_tokens": 5, "metadata": {"k": "v"},
                      "input": [{"role": "user", "content": [{"type": "input_text", "text": "x"}]},
                                {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
                                {"type": "function_call_output", "call_id": "c", "output": "o"}],
                      "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
                      "text": {"format": {"type": "json_schema", "name": "s", "schema": {"type": "object"}}}},
    "/v1/responses/compact": {"model": "m", "instructions": "i", "prompt_cache_key": "k",
                              "input": [{"role": "user", "content": [{"type": "input_text", "text": "x"}]},
                                        {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
                                        {"type": "function_call_output", "call_id": "c", "output": "o"}]},
    "/v1/embeddings": {"model": "m", "input": ["x", "y"], "dimensions": 4, "encoding_format": "base64"},
}  # fmt: skip
# A count of tokens takes what a response would be asked (and answers what it counted).
BODIES["/v1/responses/input_tokens"] = {**BODIES["/v1/responses"], "reasoning": {"effort": "low"}}
BODIES["/v1/messages"] = {
    "model": "m", "max_tokens": 5, "system": [{"type": "text", "text": "s"}], "stop_sequences": ["a"],
    "temperature": 0.5, "top_p": 0.9, "top_k": 5, "metadata": {"user_id": "u"},
    "thinking": {"type": "enabled", "budget_tokens": 2}, "tool_choice": {"type": "tool", "name": "f"},
    "tools": [{"name": "f", "description": "d", "input_schema": {"type": "object"}}],
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "x"},
                                     {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                  "data": "AA=="}},
                                     {"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                                                     "data": "d"}}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {"a": 1}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "r"}]},
    ],
}  # fmt: skip
BODIES["/v1/messages/count_tokens"] = {**BODIES["/v1/messages"], "max_tokens": None}


class Raw:
    """A JSON text put as it is into a document (NaN, 1e309, digits beyond any integer...)."""

    def __init__(self, text: str) -> None:
        self.text = text


def _dumps(value: Any) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {_dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_dumps(v) for v in value) + "]"
    return json.dumps(value)  # a lone surrogate is written as its escape (ensure_ascii)


def _evil() -> Any:
    from hypothesis import strategies as st

    return st.one_of(
        st.sampled_from([Raw("NaN"), Raw("Infinity"), Raw("-Infinity"), Raw("1e309"), Raw("-1e400"),
                         Raw("1" + "0" * 5000), Raw("9" * 400), Raw("1e-400")]),
        st.builds(lambda depth: Raw("[" * depth + "]" * depth), st.integers(60, 3000)),
        st.builds(lambda depth: Raw('{"a":' * depth + "1" + "}" * depth), st.integers(60, 1200)),
        st.builds(lambda pre, s, post: pre + chr(s) + post, st.text(max_size=5), st.integers(0xD800, 0xDFFF),
                  st.text(max_size=5)),
        st.integers(min_value=-(2**80), max_value=2**80),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=50),
        st.none(), st.booleans(), st.just([]), st.just({}),
    )  # fmt: skip


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a document a value can be put: each field, item, and a new key."""
    found = [path]
    if isinstance(value, dict):
        found.append((*path, "\udfffnew" if len(path) % 2 else "extra"))
        for key, item in value.items():
            found += _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*path, index))
    return found


def _put(document: Any, path: tuple[Any, ...], value: Any) -> Any:
    """The document with `value` at `path` (a new key, or in place of what was there)."""
    if not path:
        return value
    head, *rest = path
    if isinstance(document, dict):
        return {**document, head: _put(document[head], tuple(rest), value) if head in document else value}
    return [_put(item, tuple(rest), value) if index == head else item for index, item in enumerate(document)]


@pytest.fixture
def fuzz_target(make_once: StackFactory, tmp_path: Path) -> Stack:
    return walled_stack(make_once, tmp_path, WAIT_TIMEOUT="5")


def test_no_input_gets_a_5xx(fuzz_target: Stack, fake: FakeModelServer) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    stack = fuzz_target
    seen: list[str] = []

    @st.composite
    def request(draw: Any) -> tuple[str, str, bytes]:
        path = draw(st.sampled_from(sorted(BODIES)))
        base = BODIES[path]
        where = draw(st.sampled_from(_paths(base)))
        body = _dumps(_put(base, where, draw(_evil())))
        return "POST", path, body.encode("utf-8", "surrogatepass")

    queries = st.tuples(
        st.sampled_from(["/usage?start=", "/usage?end=", "/usage?tenant=", "/jobs/x?tenant=", "/generate?wait=",
                         "/v1/files?limit=", "/v1/batches?after=", "/v1/files?after=",
                         "/v1/responses/resp_x?stream=true&starting_after=", "/v1/responses/resp_x/input_items?limit=",
                         "/v1/responses/resp_x/input_items?after="]),
        st.one_of(st.sampled_from(["0001-01-01", "9999-12-31", "%ED%BF%BF", "%00", "1e309", "NaN", "-1",
                                   "99999999999999999999999", "2026-02-30", "%F0%9F%98%80"]), st.text(max_size=20)),
    )  # fmt: skip

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.one_of(request(), queries))
    def never_5xx(case: Any) -> None:
        headers = {**auth("alpha-key"), "content-type": "application/json"}
        if len(case) == 3:
            _, path, body = case
            answer = httpx.post(f"{stack.url}{path}?wait=5", content=body, headers=headers, timeout=30)
        else:
            path, value = case
            # Percent-escapes as given (invalid UTF-8 among them), anything else escaped.
            query = value if re.fullmatch(r"(%[0-9A-F]{2})+", value) else quote(value, safe="")
            method = "POST" if path.startswith("/generate") else "GET"
            answer = httpx.request(method, f"{stack.url}{path}{query}", headers=headers, timeout=30,
                                   content=b'{"content": "x"}' if method == "POST" else None)  # fmt: skip
        seen.append(f"{answer.status_code}")
        assert answer.status_code < 500, (case if len(case) == 2 else case[2][:300], answer.text[:300])

    never_5xx()
    # Nothing is stuck: an ordinary request is answered after all of them.
    fine = httpx.post(f"{stack.url}/generate", json={"content": "still here"}, headers=auth("alpha-key"), timeout=30)
    assert fine.status_code == 200 and fine.json()["content"] == "echo: still here"
    assert len(seen) >= 100


def test_a_202s_location_is_the_configured_address_never_the_clients_host(
    make_once: StackFactory, fake: FakeModelServer
) -> None:
    stack = make_once(PUBLIC_BASE_URL="https://llm.example.com/")
    answer = httpx.post(f"{stack.url}/generate?wait=0", json={"job_id": "where-1", "content": "x"},
                        headers={"Host": "evil.example.net"})  # fmt: skip
    assert answer.status_code == 202
    assert answer.headers["location"] == answer.json()["status_url"] == "https://llm.example.com/jobs/where-1"
    assert answer.json()["tenant"] == "default"


def test_a_job_sent_from_python_is_read_back_there_and_through_its_tenants_api(
    make_stack: StackFactory, fake: FakeModelServer, tmp_path: Path
) -> None:
    from celery import Celery

    from tasks.settings import worker_settings

    stack = walled_stack(make_stack, tmp_path)
    python = Celery("python-client")
    python.config_from_object(worker_settings(stack.config))
    try:
        # The default tenant's job keeps its id; another tenant's is <tenant>~<job_id>.
        for task_id, job in (
            ("py-1", {"content": "from python"}),
            ("alpha~py-2", {"content": "alpha's, from python", "tenant": "alpha"}),
        ):
            python.send_task("llm.generate", args=[job], task_id=task_id, queue=stack.config.queue_name)
            assert python.AsyncResult(task_id).get(timeout=30)["content"] == f"echo: {job['content']}"
    finally:
        python.close()
    theirs = httpx.get(f"{stack.url}/jobs/py-2", headers=auth("alpha-key")).json()
    assert theirs["job_id"] == "py-2" and theirs["tenant"] == "alpha" and theirs["status"] == "succeeded"
    assert httpx.get(f"{stack.url}/jobs/py-2", headers=auth("beta-key")).status_code == 404
    default = httpx.get(f"{stack.url}/jobs/py-1?tenant=default", headers=auth("ops-key")).json()
    assert default["result"]["content"] == "echo: from python"
