"""A project's rate limits per model through the official ``openai`` SDK's admin client
(``projects.rate_limits``), strict validation on, against a control plane in SQLite and
in PostgreSQL: listed one per model of the registry and set field by field, audited;
who may call them; the worst inputs refused naming the field, nothing stored; and each
limit reached through the gateway, under load (exactly the allowed count accepted, each
answered, the rest OpenAI's 429 ``rate_limit_exceeded``, another project unaffected),
on a second API process within a second, and on batches' input tokens."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest

from testing.control_databases import ControlDatabases
from testing.fake_model_server import FakeModelServer, free_port
from testing.openai_sdk import admin_client, chat_line, file_lines, upload, wait_until_finished
from tests.conftest import Stack, _stack_factory

pytestmark = pytest.mark.integration

ADMIN_KEY = "sk-admin-test-7d1e3b5a9c0f2e4d6b8a1c3e5f7a9b0d"
TENANT_KEY = "key-research-limits"
TENANTS = f"""
tenants:
  - name: research
    keys: ["{TENANT_KEY}"]
    quotas: {{requests_per_minute: 6000, tokens_per_minute: 900000}}
"""
OTHER = "org/other:8b"  # a second model, named as registries name them ("/" and ":")
WITHIN = 1.0  # the bound the control plane promises for a change to reach every API process


@pytest.fixture(scope="module")
def limited(
    fake_server: FakeModelServer,
    broker_env: dict[str, str],
    control_databases: ControlDatabases,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """Two API processes and a worker, two models, a control plane of their own."""
    if not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("once is enough: the rate limits are counted in Redis whichever the broker")
    folder = tmp_path_factory.mktemp("limits")
    keys_file = folder / "tenants.yaml"
    keys_file.write_text(TENANTS)
    run = uuid.uuid4().hex[:8]
    models = [
        {"name": "fake-model", "url": fake_server.url, "queue": f"test-limits-{run}.fake"},
        {"name": OTHER, "url": fake_server.url, "served_name": "fake-model", "queue": f"test-limits-{run}.other"},
    ]
    make, cleanup = _stack_factory(folder, fake_server, broker_env)
    stack = make(
        workers=1, concurrency=8, ADMIN_API_KEYS=ADMIN_KEY, API_KEYS_FILE=str(keys_file), MODELS=json.dumps(models),
        CONTROL_DATABASE_URL=control_databases.fresh(), CONTROL_POLL_SECONDS="60", BATCH_POLL_SECONDS="0.2",
    )  # fmt: skip
    port = free_port()
    stack.processes.api(stack.env, port)
    stack.env["SECOND_API"] = f"http://127.0.0.1:{port}"
    yield stack
    cleanup()


def org(url: str, key: str = ADMIN_KEY) -> Any:
    return admin_client(url, key).admin.organization


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def project_with_key(stack: Stack, name: str) -> tuple[str, str]:
    """A new project and its key's value."""
    admin = org(stack.url)
    project = admin.projects.create(name=name)
    account = admin.projects.service_accounts.create(project.id, name="bot")
    assert account.api_key
    return project.id, account.api_key.value


def sdk(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=60, _strict_response_validation=True)


def chat(url: str, key: str, text: str, model: str = "fake-model") -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": text}]}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=auth(key), timeout=60)


def fresh_minute(least: float = 20.0) -> None:
    """Wait, when need be, for a UTC minute with at least `least` seconds left: the counts
    of a minute are checked within one."""
    left = 60 - time.time() % 60
    if left < least:
        time.sleep(left + 0.2)


def refused_for(answer: httpx.Response, limit: str, model: str, kind: str) -> None:
    """`answer` is OpenAI's 429 rate_limit_exceeded naming `limit` and `model`."""
    assert answer.status_code == 429, answer.text
    error = answer.json()["error"]
    assert (error["code"], error["type"]) == ("rate_limit_exceeded", kind), error
    assert limit in error["message"] and f"Rate limit reached for {model} in project" in error["message"]
    assert 1 <= int(answer.headers["Retry-After"]) <= (86_401 if "day" in limit else 61)


def test_rate_limits_are_one_per_model_set_field_by_field_and_audited(limited: Stack) -> None:
    admin = org(limited.url)
    project = admin.projects.create(name="limits listed")
    listed = list(admin.projects.rate_limits.list_rate_limits(project.id))
    assert [(found.id, found.model) for found in listed] == [("rl-fake-model", "fake-model"), (f"rl-{OTHER}", OTHER)]
    assert all(found.object == "project.rate_limit" for found in listed)
    # None set: 0 requests and tokens per minute (the SDK's type needs a number), null the others.
    assert (listed[1].max_requests_per_1_minute, listed[1].max_tokens_per_1_minute) == (0, 0)
    assert listed[1].max_requests_per_1_day is None and listed[1].batch_1_day_max_input_tokens is None

    updated = admin.projects.rate_limits.update_rate_limit(
        f"rl-{OTHER}", project_id=project.id, max_requests_per_1_minute=30, max_tokens_per_1_minute=40_000,
        max_requests_per_1_day=1000, batch_1_day_max_input_tokens=2_000_000,
    )  # fmt: skip
    assert (updated.id, updated.model, updated.max_requests_per_1_minute) == (f"rl-{OTHER}", OTHER, 30)
    assert (updated.max_tokens_per_1_minute, updated.max_requests_per_1_day) == (40_000, 1000)
    assert updated.batch_1_day_max_input_tokens == 2_000_000
    # Another field later leaves the others as they were; 0 clears one.
    again = admin.projects.rate_limits.update_rate_limit(
        f"rl-{OTHER}", project_id=project.id, max_requests_per_1_minute=0, max_requests_per_1_day=500
    )
    assert (again.max_requests_per_1_minute, again.max_tokens_per_1_minute, again.max_requests_per_1_day) == (
        0, 40_000, 500,
    )  # fmt: skip
    # Page by page (the SDK follows last_id), and back (before).
    first = admin.projects.rate_limits.list_rate_limits(project.id, limit=1)
    assert [found.id for found in first.data] == ["rl-fake-model"] and first.has_more
    assert [found.id for found in first.get_next_page().data] == [f"rl-{OTHER}"]
    back = admin.projects.rate_limits.list_rate_limits(project.id, before=f"rl-{OTHER}")
    assert [found.id for found in back.data] == ["rl-fake-model"]
    assert admin.projects.rate_limits.list_rate_limits(project.id, after="rl-nothing").data == []
    assert [found.max_requests_per_1_day for found in admin.projects.rate_limits.list_rate_limits(project.id)] == [
        None, 500,
    ]  # fmt: skip

    events = admin.audit_logs.list(project_ids=[project.id], event_types=["rate_limit.updated"]).data
    assert len(events) == 2 and all(event.rate_limit_updated for event in events)
    newest = events[0].rate_limit_updated
    assert newest and newest.id == f"rl-{OTHER}" and newest.changes_requested
    assert (
        newest.changes_requested.max_requests_per_1_day == 500
        and newest.changes_requested.max_requests_per_1_minute == 0
    )
    assert newest.changes_requested.max_tokens_per_1_minute is None  # not asked for this time
    assert events[0].project and events[0].project.id == project.id

    # A project or a limit that is not there: 404; a keys file's tenant: its own quotas, read-only.
    with pytest.raises(openai.NotFoundError):
        admin.projects.rate_limits.list_rate_limits("proj_000000000000000000000000")
    with pytest.raises(openai.NotFoundError):
        admin.projects.rate_limits.update_rate_limit("rl-nothing", project_id=project.id, max_requests_per_1_minute=1)
    declared = list(admin.projects.rate_limits.list_rate_limits("research"))
    assert [(found.max_requests_per_1_minute, found.max_tokens_per_1_minute) for found in declared] == [
        (6000, 900_000), (6000, 900_000),
    ]  # fmt: skip
    with pytest.raises(openai.BadRequestError, match="API_KEYS_FILE"):
        admin.projects.rate_limits.update_rate_limit(
            "rl-fake-model", project_id="research", max_requests_per_1_minute=1
        )


def test_only_admin_api_keys_read_and_set_rate_limits(limited: Stack) -> None:
    project, key = project_with_key(limited, "callers")
    made = org(limited.url).admin_api_keys.create(name="another admin")
    # The owner (ADMIN_API_KEYS) and another admin key alike.
    for admin_key in (ADMIN_KEY, made.value):
        limits = org(limited.url, admin_key).projects.rate_limits
        assert len(limits.list_rate_limits(project).data) == 2
        limits.update_rate_limit("rl-fake-model", project_id=project, max_requests_per_1_day=100 + len(admin_key))
    base = f"{limited.url}/v1/organization/projects/{project}/rate_limits"
    for method, url in (("GET", base), ("POST", f"{base}/rl-fake-model")):
        nobody = httpx.request(method, url, json={"max_requests_per_1_minute": 1}, timeout=10)
        assert nobody.status_code == 401 and nobody.json()["error"]["type"] == "authentication_error"
        for tenant_key in (key, TENANT_KEY):  # a project's key, a keys file tenant's
            refused = httpx.request(method, url, json={"max_requests_per_1_minute": 1}, headers=auth(tenant_key))
            assert refused.status_code == 403 and refused.json()["error"]["type"] == "permission_error"
    (limit, _) = org(limited.url).projects.rate_limits.list_rate_limits(project).data
    assert limit.max_requests_per_1_minute == 0 and limit.max_requests_per_1_day == 100 + len(made.value)


def test_the_worst_inputs_are_refused_naming_the_field_and_nothing_is_stored(limited: Stack) -> None:
    admin = org(limited.url)
    project, _ = project_with_key(limited, "worst inputs")
    before = [found.to_dict() for found in admin.projects.rate_limits.list_rate_limits(project)]
    headers = {**auth(ADMIN_KEY), "Content-Type": "application/json"}
    base = f"{limited.url}/v1/organization/projects/{project}/rate_limits"

    def refused(path: str, field: str, content: bytes, status: int = 400) -> None:
        answer = httpx.post(f"{base}/{path}", headers=headers, content=content, timeout=10)
        # 400; what no JSON value can carry (1e400, a lone surrogate) is the body reader's
        # 422 (api/http/json_body.py, every endpoint's), naming the field too.
        unreadable = b"e400" in content or b"\\ud800" in content
        assert answer.status_code == status or (unreadable and answer.status_code == 422), (path, content, answer.text)
        error = answer.json()["error"]
        assert field in f"{error['param']} {error['message']}", (path, content, error)

    for field in ("max_requests_per_1_minute", "max_tokens_per_1_minute", "max_requests_per_1_day",
                  "batch_1_day_max_input_tokens"):  # fmt: skip
        for value in (b"-1", b"9007199254740992", b"1" + b"0" * 30, b"1e400", b"1.5", b"2.0", b'"5"', b"true",
                      b'"\\ud800"', b"[1]", b'{"a": 1}'):  # fmt: skip
            refused("rl-fake-model", field, b'{"%s": %s}' % (field.encode(), value))
    refused("rl-fake-model", "max_images_per_1_minute", b'{"max_images_per_1_minute": 5}')
    refused("rl-fake-model", "max_audio_megabytes_per_1_minute", b'{"max_audio_megabytes_per_1_minute": 5}')
    refused("rl-fake-model", "JSON", b'{"max_requests_per_1_minute": 1')  # not JSON whole
    # A rate limit's id: one that names no model is not there; one that cannot be an id is refused.
    refused("rl-nothing", "rl-nothing", b'{"max_requests_per_1_minute": 1}', status=404)
    refused("fake-model", "rate_limit_id", b'{"max_requests_per_1_minute": 1}')
    for bad in ("rl-" + "x" * 300, "rl-%00", "rl-a%09b", "rl-%ED%A0%80"):
        refused(bad, "rate_limit_id", b'{"max_requests_per_1_minute": 1}')
    # A line break in an id (which may hold "/", as a model's name) matches no route: 404.
    assert httpx.post(f"{base}/rl-a%0ab", headers=headers, json={}, timeout=10).status_code == 404
    answer = httpx.get(f"{base}?limit=0", headers=headers, timeout=10)
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "limit"
    answer = httpx.get(f"{base}?after=%00", headers=headers, timeout=10)
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "after"
    answer = httpx.post(f"{limited.url}/v1/organization/projects/Proj_%C3%BC/rate_limits/rl-fake-model",
                        headers=headers, content=b'{"max_requests_per_1_minute": 1}', timeout=10)  # fmt: skip
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "project_id"

    after = [found.to_dict() for found in admin.projects.rate_limits.list_rate_limits(project)]
    assert after == before
    assert admin.audit_logs.list(project_ids=[project], event_types=["rate_limit.updated"]).data == []


def test_a_rate_limit_reached_under_load_accepts_exactly_its_count_and_answers_each(
    limited: Stack, fake: FakeModelServer
) -> None:
    """A hostile project floods one model past its requests per minute, beside a normal
    project: exactly the limit is accepted and answered, the rest refused before anything
    is queued; the normal project's answers are as they would be alone."""
    hostile, hostile_key = project_with_key(limited, "hostile")
    _, normal_key = project_with_key(limited, "normal")
    allowed, sent, normal_sent = 12, 60, 20
    org(limited.url).projects.rate_limits.update_rate_limit(
        "rl-fake-model", project_id=hostile, max_requests_per_1_minute=allowed
    )
    second = limited.env["SECOND_API"]
    time.sleep(WITHIN)  # held by both API processes (test_a_limit_set_on_one_api_process_... times it)
    fresh_minute(30)
    fake.latency = 0.05
    asked_before = len(fake.completions)
    lock, answers, refusals = threading.Lock(), [], []

    def hostile_request(n: int) -> None:
        client = sdk(limited.url if n % 2 else second, hostile_key)  # both API processes: one count
        try:
            done = client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": f"h{n}"}])
        except openai.RateLimitError as exc:
            with lock:
                refusals.append(exc.response)
            return
        with lock:
            answers.append((n, done.choices[0].message.content))

    def normal_request(n: int) -> tuple[int, str | None]:
        done = sdk(second, normal_key).chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": f"n{n}"}]
        )
        return n, done.choices[0].message.content

    with ThreadPoolExecutor(max_workers=40) as pool:
        normal = [pool.submit(normal_request, n) for n in range(normal_sent)]
        flood = [pool.submit(hostile_request, n) for n in range(sent)]
        for future in flood:
            future.result()
        normals = [future.result() for future in normal]

    assert len(answers) == allowed and len(refusals) == sent - allowed
    assert all(content == f"echo: h{n}" for n, content in answers)  # every accepted one answered, its own
    for refusal in refusals:
        refused_for(refusal, "max_requests_per_1_minute", "fake-model", "requests")
    assert normals == [(n, f"echo: n{n}") for n in range(normal_sent)]
    # Nothing refused reached the model server: the accepted and the normal project's alone.
    assert len(fake.completions) - asked_before == allowed + normal_sent
    # The project's other model is not limited by it.
    assert chat(limited.url, hostile_key, "other", model=OTHER).status_code == 200


def test_tokens_per_minute_and_requests_per_day_are_counted_per_model(limited: Stack, fake: FakeModelServer) -> None:
    project, key = project_with_key(limited, "tokens")
    limits = org(limited.url).projects.rate_limits
    limits.update_rate_limit(f"rl-{OTHER}", project_id=project, max_tokens_per_1_minute=5)
    limits.update_rate_limit("rl-fake-model", project_id=project, max_requests_per_1_day=2)
    fresh_minute()
    # Tokens as the model server counted them (the fake: a word a token), once the answer is stored.
    first = chat(limited.url, key, "one two three", model=OTHER)
    assert (
        first.status_code == 200 and sum(first.json()["usage"][k] for k in ("prompt_tokens", "completion_tokens")) >= 5
    )
    asked = len(fake.completions)
    refused_for(chat(limited.env["SECOND_API"], key, "again", model=OTHER), "max_tokens_per_1_minute", OTHER, "tokens")
    # The spec's endpoint is refused alike, and a stream before anything is streamed.
    native = httpx.post(f"{limited.url}/generate", json={"content": "x", "meta": {"model": OTHER}}, headers=auth(key))
    assert native.status_code == 429 and "max_tokens_per_1_minute" in native.json()["detail"]
    streamed = httpx.post(f"{limited.url}/v1/chat/completions", headers=auth(key), timeout=30, json={
        "model": OTHER, "stream": True, "messages": [{"role": "user", "content": "s"}]})  # fmt: skip
    refused_for(streamed, "max_tokens_per_1_minute", OTHER, "tokens")
    assert len(fake.completions) == asked
    # Requests per UTC day on the other model.
    assert [chat(limited.url, key, f"d{n}").status_code for n in range(2)] == [200, 200]
    refused_for(chat(limited.url, key, "d3"), "max_requests_per_1_day", "fake-model", "requests")


def submit(url: str, key: str) -> int:
    """A job queued without awaiting its answer (202), or refused (429): a probe of the
    limits an API process holds that costs no wait for a model."""
    body = {"content": "probe", "meta": {"model": "fake-model"}}
    return httpx.post(f"{url}/generate?wait=0", json=body, headers=auth(key), timeout=10).status_code


def test_a_limit_set_on_one_api_process_holds_on_the_other_within_a_second(limited: Stack) -> None:
    project, key = project_with_key(limited, "across")
    second = limited.env["SECOND_API"]
    fresh_minute(30)
    assert [submit(second, key) for _ in range(3)] == [202] * 3  # no limit yet
    org(limited.url).projects.rate_limits.update_rate_limit(
        "rl-fake-model", project_id=project, max_requests_per_1_minute=1
    )
    set_at = time.monotonic()
    assert submit(limited.url, key) == 202  # held by the first before it answered: the one of the minute
    while (answer := submit(second, key)) != 429:
        assert answer == 202
        assert time.monotonic() - set_at < 10, "the limit never reached the second API process"
    took = time.monotonic() - set_at
    assert took < WITHIN, f"a rate limit set on one API process held on another after {took:.3f}s"
    refused_for(chat(second, key, "refused"), "max_requests_per_1_minute", "fake-model", "requests")
    # Cleared on the second: the first lets requests through again within the second.
    org(second).projects.rate_limits.update_rate_limit("rl-fake-model", project_id=project, max_requests_per_1_minute=0)
    cleared_at = time.monotonic()
    while submit(limited.url, key) != 202:
        assert time.monotonic() - cleared_at < 10, "the cleared limit never reached the first API process"
    took = time.monotonic() - cleared_at
    assert took < WITHIN, f"a rate limit cleared on one API process still held on another for {took:.3f}s"


def test_a_batch_past_its_models_daily_input_tokens_fails_whole_before_any_line_runs(
    limited: Stack, fake: FakeModelServer
) -> None:
    project, key = project_with_key(limited, "batches")
    org(limited.url).projects.rate_limits.update_rate_limit(
        "rl-fake-model", project_id=project, batch_1_day_max_input_tokens=110, max_requests_per_1_minute=1
    )
    client = sdk(limited.url, key)
    asked = len(fake.completions)
    big = upload(client, [chat_line(f"line-{n}", "x" * 120) for n in range(3)])  # about 31 tokens each: 93
    first = wait_until_finished(client, client.batches.create(
        input_file_id=big, endpoint="/v1/chat/completions", completion_window="24h").id)  # fmt: skip
    assert first.status == "completed" and first.request_counts and first.request_counts.completed == 3
    assert len(file_lines(client, first.output_file_id)) == 3  # a batch's lines take nothing of the RPM
    again = upload(client, [chat_line("one-more", "y" * 120)])  # 93 + 31 > 110: refused whole
    refused = wait_until_finished(client, client.batches.create(
        input_file_id=again, endpoint="/v1/chat/completions", completion_window="24h").id)  # fmt: skip
    assert refused.status == "failed" and refused.errors and refused.errors.data
    error = refused.errors.data[0]
    assert error.code == "token_limit_exceeded" and error.message
    assert "fake-model" in error.message and "batch_1_day_max_input_tokens 110" in error.message
    assert len(fake.completions) - asked == 3  # the refused batch's line never ran
