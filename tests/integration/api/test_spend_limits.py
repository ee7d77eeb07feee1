"""Projects' hard spend limits (``projects.spend_limit``) through the official ``openai``
SDK's admin client, strict validation on, against a control plane in SQLite and in
PostgreSQL: their shapes and the worst inputs; a budget reached under load through real
workers (429 insufficient_quota from then on, every request accepted answered, the
spend counted equal to the answered requests' usage at the model's prices), a project
beside it unaffected; every model endpoint refusing a project at its limit; a limit
raised on one API process letting requests through on another within a second; and the
month's spend made again from the usage history when Redis lost it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest
import redis
from sqlalchemy import insert
from websockets.sync.client import connect

from shared.contract.keys import NANO_PER_CENT, usage_month
from shared.control.database import engine_for
from shared.control.models import UsageBucket
from shared.registry import Prices
from testing.control_databases import ControlDatabases
from testing.fake_model_server import FakeModelServer, free_port
from testing.openai_sdk import admin_client, chat_line, upload
from tests.conftest import Stack, StackFactory

pytestmark = pytest.mark.integration

ADMIN_KEY = "sk-admin-test-5e0c2b7a9d4f4e1c8b6a3d2f1e0c9b8a"
# Dear enough that a few requests spend a few cents (USD per million tokens).
PRICES = Prices(input=2000.0, cached_input=1000.0, output=4000.0)
MODEL = "priced"
ASK: Any = [{"role": "user", "content": "x"}]
WITHIN = 1.0  # the bound the control plane promises for a change to reach every API process


@pytest.fixture
def once(broker_env: dict[str, str]) -> None:
    if not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("once is enough: spend is counted the same whichever the broker")


def registry(fake: FakeModelServer) -> str:
    prices = {"input": PRICES.input, "cached_input": PRICES.cached_input, "output": PRICES.output}
    return json.dumps({"models": [{"name": MODEL, "url": fake.url, "served_name": "fake-model", "prices": prices}]})


def gateway(make_stack: StackFactory, fake: FakeModelServer, url: str, workers: int = 1, **env: str) -> Stack:
    return make_stack(
        workers=workers, ADMIN_API_KEYS=ADMIN_KEY, CONTROL_DATABASE_URL=url, MODELS=registry(fake),
        SPEND_SEED_SECONDS="1", **env,
    )  # fmt: skip


def org(url: str, key: str = ADMIN_KEY) -> Any:
    return admin_client(url, key).admin.organization


def project_with_key(url: str, name: str) -> tuple[str, str]:
    """A new project and a key of it."""
    admin = org(url)
    project = admin.projects.create(name=name)
    account = admin.projects.service_accounts.create(project.id, name="bot")
    assert account.api_key
    return project.id, account.api_key.value


def sdk(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=60, _strict_response_validation=True)


def chat(url: str, key: str, text: str = "how much is this") -> openai.types.chat.ChatCompletion:
    return sdk(url, key).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": text}])


def cost(usage: Any) -> int:
    return PRICES.cost(usage.prompt_tokens, usage.completion_tokens)


def month_spend(stack: Stack, project: str) -> int | None:
    """The project's spend this month as Redis counts it, nano-USD (None: not counted)."""
    client = redis.Redis(host=stack.config.redis_host, port=stack.config.redis_port)
    try:
        found = client.get(stack.config.keys.spend(project, usage_month(time.time())[0]))
    finally:
        client.close()
    return None if found is None else int(found)


def refused_for_spend(exc: openai.RateLimitError, project: str) -> bool:
    return exc.code == "insufficient_quota" and exc.type == "insufficient_quota" and project in exc.message


def seconds_until(done: Callable[[], bool], timeout: float = 10.0) -> float:
    started = time.monotonic()
    while not done():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not so after {timeout}s")
        time.sleep(0.01)
    return time.monotonic() - started


# The admin API: shapes, who may call it, the worst inputs.


@pytest.fixture(scope="module")
def admin_stack(
    fake_server: FakeModelServer,
    broker_env: dict[str, str],
    control_databases: ControlDatabases,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    from tests.conftest import _stack_factory

    if not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("once is enough: the control plane is the same whichever the broker")
    folder = tmp_path_factory.mktemp("spend")
    keys_file = folder / "tenants.yaml"
    keys_file.write_text('tenants:\n  - name: research\n    keys: ["key-research-spend"]\n')
    make, cleanup = _stack_factory(folder, fake_server, broker_env)
    yield make(
        workers=0, ADMIN_API_KEYS=ADMIN_KEY, API_KEYS_FILE=str(keys_file), MODELS=registry(fake_server),
        CONTROL_DATABASE_URL=control_databases.fresh(),
    )  # fmt: skip
    cleanup()


def test_a_spend_limit_is_set_read_replaced_and_deleted_in_openais_shapes(admin_stack: Stack) -> None:
    admin = org(admin_stack.url)
    project = admin.projects.create(name="budgeted")
    with pytest.raises(openai.NotFoundError, match="no spend limit"):
        admin.projects.spend_limit.retrieve(project.id)

    made = admin.projects.spend_limit.update(project.id, threshold_amount=12_345, currency="USD", interval="month")
    assert made.object == "project.spend_limit" and made.threshold_amount == 12_345
    assert (made.currency, made.interval, made.enforcement.status) == ("USD", "month", "inactive")
    assert admin.projects.spend_limit.retrieve(project.id) == made
    # Nothing spent yet: a limit of 0 is reached at once.
    zero = admin.projects.spend_limit.update(project.id, threshold_amount=0, currency="USD", interval="month")
    assert zero.threshold_amount == 0 and zero.enforcement.status == "enforcing"

    deleted = admin.projects.spend_limit.delete(project.id)
    assert deleted.object == "project.spend_limit.deleted" and deleted.deleted is True
    with pytest.raises(openai.NotFoundError):
        admin.projects.spend_limit.retrieve(project.id)
    with pytest.raises(openai.NotFoundError):
        admin.projects.spend_limit.delete(project.id)
    with pytest.raises(openai.NotFoundError):
        admin.projects.spend_limit.update("proj_000000000000000000000000", threshold_amount=1, currency="USD",
                                          interval="month")  # fmt: skip
    # A keys file's tenant is changed in the file.
    with pytest.raises(openai.BadRequestError, match="API_KEYS_FILE"):
        admin.projects.spend_limit.update("research", threshold_amount=1, currency="USD", interval="month")

    # Each change is in the audit log, as a change of the project.
    events = admin.audit_logs.list(resource_ids=[project.id], event_types=["project.updated"]).data
    assert len(events) == 3 and all(event.project and event.project.id == project.id for event in events)
    asked = [event.project_updated.changes_requested for event in events if event.project_updated]
    assert [(change.model_extra or {}).get("spend_limit") for change in asked if change] == [
        None,
        {"threshold_amount": 0, "currency": "USD", "interval": "month"},
        {"threshold_amount": 12_345, "currency": "USD", "interval": "month"},
    ]


def test_only_admin_keys_reach_spend_limits(admin_stack: Stack) -> None:
    admin = org(admin_stack.url)
    project = admin.projects.create(name="guarded")
    account = admin.projects.service_accounts.create(project.id, name="bot")
    assert account.api_key
    path = f"{admin_stack.url}/v1/organization/projects/{project.id}/spend_limit"
    body = {"threshold_amount": 100, "currency": "USD", "interval": "month"}
    assert httpx.post(path, json=body, timeout=10).status_code == 401
    assert httpx.get(path, timeout=10).status_code == 401
    for key in (account.api_key.value, "key-research-spend"):
        headers = {"Authorization": f"Bearer {key}"}
        assert httpx.post(path, json=body, headers=headers, timeout=10).status_code == 403
        assert httpx.get(path, headers=headers, timeout=10).status_code == 403
        assert httpx.delete(path, headers=headers, timeout=10).status_code == 403
    with pytest.raises(openai.NotFoundError):
        admin.projects.spend_limit.retrieve(project.id)  # nothing was set


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"threshold_amount": -1, "currency": "USD", "interval": "month"}, "threshold_amount"),
        ({"threshold_amount": 10.5, "currency": "USD", "interval": "month"}, "threshold_amount"),
        ({"threshold_amount": "100", "currency": "USD", "interval": "month"}, "threshold_amount"),
        ({"threshold_amount": True, "currency": "USD", "interval": "month"}, "threshold_amount"),
        ({"threshold_amount": 10**30, "currency": "USD", "interval": "month"}, "threshold_amount"),
        ({"threshold_amount": None, "currency": "USD", "interval": "month"}, "threshold_amount"),
        ({"currency": "USD", "interval": "month"}, "threshold_amount"),
        ({"threshold_amount": 100, "currency": "EUR", "interval": "month"}, "currency"),
        ({"threshold_amount": 100, "currency": "usd", "interval": "month"}, "currency"),
        ({"threshold_amount": 100, "currency": "\ud800", "interval": "month"}, "currency"),
        ({"threshold_amount": 100, "currency": "USD", "interval": "day"}, "interval"),
        ({"threshold_amount": 100, "currency": "USD", "interval": "\udfff\ud800"}, "interval"),
    ],
)
def test_the_worst_inputs_are_refused_naming_the_field_and_nothing_is_stored(
    admin_stack: Stack, body: dict[str, Any], field: str
) -> None:
    admin = org(admin_stack.url)
    project = admin.projects.create(name="worst inputs")
    raw = json.dumps(body)  # lone surrogates as JSON's escapes, as a client may send them
    answer = httpx.post(
        f"{admin_stack.url}/v1/organization/projects/{project.id}/spend_limit",
        content=raw,
        headers={"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"},
        timeout=10,
    )
    # A lone surrogate is refused as the body is read, before its fields are (422, as on
    # every /v1 endpoint); the rest as OpenAI refuses a bad field (400).
    assert answer.status_code == (422 if "\\ud" in raw else 400), answer.text
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error" and field in error["message"]
    with pytest.raises(openai.NotFoundError):
        admin.projects.spend_limit.retrieve(project.id)
    assert not admin.audit_logs.list(resource_ids=[project.id], event_types=["project.updated"]).data
    # A project id that is not one: 400 naming it, nothing reached.
    bad = httpx.post(
        f"{admin_stack.url}/v1/organization/projects/proj_%F0%9F%98%80/spend_limit",
        json={"threshold_amount": 1, "currency": "USD", "interval": "month"},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        timeout=10,
    )
    assert bad.status_code == 400 and "project_id" in bad.json()["error"]["message"]


# Enforcement, through real workers.


def test_a_budget_reached_under_load_refuses_with_insufficient_quota_and_loses_nothing_accepted(
    once: None, make_stack: StackFactory, fake: FakeModelServer, control_databases: ControlDatabases
) -> None:
    fake.latency = 0.2  # jobs in flight when the limit is reached: accepted, so answered and counted
    stack = gateway(make_stack, fake, control_databases.fresh(), concurrency=8)
    hostile, hostile_key = project_with_key(stack.url, "hostile")
    normal, normal_key = project_with_key(stack.url, "normal")
    # What one request costs (the same text, the same usage), to set a limit of a few of
    # them: asked by the project without a limit, so the other's month starts at 0.
    one = chat(stack.url, normal_key)
    assert one.usage and month_spend(stack, normal) is None  # no limit: nothing counted for it
    each = cost(one.usage)
    limit_cents = max(1, 8 * each // NANO_PER_CENT)
    org(stack.url).projects.spend_limit.update(hostile, threshold_amount=limit_cents, currency="USD",
                                               interval="month")  # fmt: skip

    def hostile_request(_: int) -> Any:
        try:
            return chat(stack.url, hostile_key)
        except openai.RateLimitError as exc:
            return exc

    def normal_request(_: int) -> Any:
        return chat(stack.url, normal_key)

    with ThreadPoolExecutor(24) as pool:
        normal_answers = pool.map(normal_request, range(20))
        outcomes = list(pool.map(hostile_request, range(60)))
        normal_done = list(normal_answers)

    answered = [outcome for outcome in outcomes if not isinstance(outcome, Exception)]
    refused = [outcome for outcome in outcomes if isinstance(outcome, Exception)]
    assert refused and answered, (len(answered), len(refused))
    assert all(refused_for_spend(exc, hostile) for exc in refused), refused[0]
    assert all(answer.choices[0].message.content == "echo: how much is this" for answer in answered)
    # Every job accepted was answered and counted: the spend is their usage at the prices.
    spent = sum(cost(answer.usage) for answer in answered)
    assert spent >= limit_cents * NANO_PER_CENT
    assert seconds_until(lambda: month_spend(stack, hostile) == spent, timeout=10) >= 0
    # The model server saw exactly the requests answered (and the first, to price one).
    asked = [c for c in fake.completions if c["messages"][-1]["content"] == "how much is this"]
    assert len(asked) == len(answered) + len(normal_done) + 1
    # From now on refused, before anything is queued; the project beside it is not.
    with pytest.raises(openai.RateLimitError) as raised:
        chat(stack.url, hostile_key)
    assert refused_for_spend(raised.value, hostile)
    assert raised.value.response.headers.get("x-should-retry") == "false"
    assert len(normal_done) == 20 and all(answer.choices for answer in normal_done)
    assert chat(stack.url, normal_key).choices
    assert month_spend(stack, normal) is None  # a project without a limit costs nothing on the path
    status = org(stack.url).projects.spend_limit.retrieve(hostile)
    assert status.enforcement.status == "enforcing" and status.threshold_amount == limit_cents


def test_every_model_endpoint_refuses_a_project_at_its_limit(
    once: None, make_stack: StackFactory, fake: FakeModelServer, control_databases: ControlDatabases
) -> None:
    stack = gateway(make_stack, fake, control_databases.fresh(), workers=0)
    project, key = project_with_key(stack.url, "spent")
    org(stack.url).projects.spend_limit.update(project, threshold_amount=0, currency="USD", interval="month")
    client = sdk(stack.url, key)
    batch_input = upload(client, [chat_line("a", "x", model=MODEL)])
    calls: list[Callable[[], Any]] = [
        lambda: client.chat.completions.create(model=MODEL, messages=ASK),
        lambda: client.chat.completions.create(model=MODEL, messages=ASK, stream=True),
        lambda: client.completions.create(model=MODEL, prompt="x"),
        lambda: client.embeddings.create(model=MODEL, input="x"),
        lambda: client.responses.create(model=MODEL, input="x"),
        lambda: client.batches.create(
            input_file_id=batch_input, endpoint="/v1/chat/completions", completion_window="24h"
        ),
    ]
    for call in calls:
        with pytest.raises(openai.RateLimitError) as raised:
            call()
        assert refused_for_spend(raised.value, project), raised.value
    headers = {"Authorization": f"Bearer {key}"}
    for path, body in (
        ("/generate", {"job_id": "spent-1", "content": "x"}),
        ("/chat_completion", {"job_id": "spent-2", "messages": [{"role": "user", "content": "x"}]}),
    ):
        answer = httpx.post(f"{stack.url}{path}", json=body, headers=headers, timeout=10)
        assert answer.status_code == 429 and "monthly spend limit" in answer.text, answer.text
    # Anthropic's endpoint, in Anthropic's shape.
    answer = httpx.post(
        f"{stack.url}/v1/messages", headers={"x-api-key": key, "anthropic-version": "2023-06-01"}, timeout=10,
        json={"model": MODEL, "max_tokens": 16, "messages": [{"role": "user", "content": "x"}]},
    )  # fmt: skip
    assert answer.status_code == 429
    error = answer.json()
    assert error["type"] == "error" and error["error"]["type"] == "rate_limit_error"
    assert "monthly spend limit" in error["error"]["message"]
    # A WebSocket turn: the error event.
    url = f"{stack.url.replace('http', 'ws', 1)}/v1/responses"
    with connect(url, additional_headers=headers, open_timeout=10) as socket:
        socket.send(json.dumps({"type": "response.create", "model": MODEL, "input": "x"}))
        event = json.loads(socket.recv(timeout=30))
    assert event["type"] == "error" and event["status"] == 429
    assert event["error"]["code"] == "insufficient_quota" and "monthly spend limit" in event["error"]["message"]
    assert not fake.requests and not fake.embedding_calls and not fake.messages_asked  # nothing reached the model


def test_a_limit_raised_on_one_api_process_lets_requests_through_on_another_within_a_second(
    once: None, make_stack: StackFactory, fake: FakeModelServer, control_databases: ControlDatabases
) -> None:
    # Notices alone: the version poll is too slow to be what makes it within the second.
    stack = gateway(make_stack, fake, control_databases.fresh(), CONTROL_POLL_SECONDS="60")
    port = free_port()
    stack.processes.api(stack.env, port)
    second = f"http://127.0.0.1:{port}"
    project, key = project_with_key(stack.url, "raised")
    org(stack.url).projects.spend_limit.update(project, threshold_amount=1, currency="USD", interval="month")

    def refused_on_second() -> bool:
        try:
            chat(second, key)
        except openai.RateLimitError as exc:
            return refused_for_spend(exc, project)
        return False

    seconds_until(refused_on_second, timeout=30)  # a cent spent, on either process
    with pytest.raises(openai.RateLimitError):
        chat(stack.url, key)
    org(stack.url).projects.spend_limit.update(project, threshold_amount=100_000, currency="USD", interval="month")
    took = seconds_until(lambda: not refused_on_second())
    assert took < WITHIN, f"a raised limit let requests through on another API process after {took:.3f}s"


def test_redis_losing_the_months_spend_starts_it_again_from_the_usage_history(
    once: None, make_stack: StackFactory, fake: FakeModelServer, control_databases: ControlDatabases
) -> None:
    url = control_databases.fresh()
    stack = gateway(make_stack, fake, url)
    project, key = project_with_key(stack.url, "durable")
    other, other_key = project_with_key(stack.url, "untouched")
    admin = org(stack.url)
    admin.projects.spend_limit.update(project, threshold_amount=1000, currency="USD", interval="month")
    admin.projects.spend_limit.update(other, threshold_amount=1000, currency="USD", interval="month")
    assert chat(stack.url, key).choices and month_spend(stack, project) is not None
    # The usage history has more of this month than Redis counts (11 USD: written by the
    # flusher, in buckets of each width; a bucket of last month counts nothing).
    month, start, _ = usage_month(time.time())
    engine = engine_for(url)
    rows = [
        {"width": width, "start_time": start + offset, "project_id": project, "model": MODEL, "api_key_id": "",
         "batch": False, "kind": "completions", "num_model_requests": 3, "input_tokens": 30,
         "input_cached_tokens": 0, "output_tokens": 10, "cost": 11 * 10**9}
        for width, offset in (("1d", 0), ("1h", 3600), ("1m", 60))
    ] + [{"width": "1d", "start_time": start - 86_400, "project_id": other, "model": MODEL, "api_key_id": "",
          "batch": False, "kind": "completions", "num_model_requests": 1, "input_tokens": 1,
          "input_cached_tokens": 0, "output_tokens": 1, "cost": 99 * 10**9}]  # fmt: skip
    with engine.begin() as connection:
        connection.execute(insert(UsageBucket), rows)
    engine.dispose()
    assert chat(stack.url, key).choices  # Redis's count is below the limit: still served

    # Redis comes back without the month's counts: made again from the history.
    client = redis.Redis(host=stack.config.redis_host, port=stack.config.redis_port)
    try:
        dropped = client.delete(stack.config.keys.spend(project, month), stack.config.keys.spend(other, month))
    finally:
        client.close()
    assert dropped == 2
    time.sleep(2.5)  # SPEND_SEED_SECONDS=1: the API process has read the history again
    with pytest.raises(openai.RateLimitError) as raised:
        chat(stack.url, key)
    assert refused_for_spend(raised.value, project)
    # Made from the history (with the flusher running, the requests above are in it too).
    assert 11 * 10**9 <= (month_spend(stack, project) or 0) < 11 * 10**9 + 10**9
    assert admin.projects.spend_limit.retrieve(project).enforcement.status == "enforcing"
    # Last month's spend is not this month's.
    assert chat(stack.url, other_key).choices
