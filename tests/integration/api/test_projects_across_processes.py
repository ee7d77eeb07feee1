"""Projects and their keys as every API process sees them: made on one process, a key
works on another within a second (as its project's tenant, on the model endpoints);
deleted, or its project archived, it is refused everywhere within a second (a plain
request, a stream, a WebSocket connection it opens, each response.create on one open
before), while a stream it began before runs to its end; an expiring
key expires; a change notice lost is caught by the version poll; and while the database
is away, the keys that worked go on working. Against SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from websockets.exceptions import InvalidStatus

from shared.control.database import engine_for
from shared.control.store import Actor, ControlStore
from testing.control_databases import POSTGRES, ControlDatabases
from testing.fake_model_server import FakeModelServer, free_port
from testing.openai_sdk import admin_client
from testing.tcp_proxy import TcpProxy
from tests.conftest import Stack, StackFactory

pytestmark = pytest.mark.integration

ADMIN_KEY = "sk-admin-test-9b8a7c6d5e4f3a2b1c0d9e8f7a6b5c4d"
# The bound the control plane promises for a change to reach every API process.
WITHIN = 1.0


@pytest.fixture
def once(broker_env: dict[str, str]) -> None:
    if not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("once is enough: the control plane is the same whichever the broker")


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def status(url: str, key: str) -> int:
    """What a tenant's endpoint answers `key` with (200: the key works)."""
    return httpx.get(f"{url}/v1/files", headers=auth(key), timeout=10).status_code


def seconds_until(done: Callable[[], bool], timeout: float = 10.0) -> float:
    """How long until `done()` holds (asked every 10 ms); fails past `timeout`."""
    started = time.monotonic()
    while not done():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not so after {timeout}s")
        time.sleep(0.01)
    return time.monotonic() - started


def two_apis(make_stack: StackFactory, url: str, workers: int = 0, **env: str) -> tuple[Stack, str]:
    """A gateway of two API processes (and `workers`) on the control plane at `url`."""
    stack = make_stack(
        workers=workers, API_KEYS="key-default", ADMIN_API_KEYS=ADMIN_KEY, CONTROL_DATABASE_URL=url, **env
    )
    port = free_port()
    stack.processes.api(stack.env, port)
    return stack, f"http://127.0.0.1:{port}"


def test_a_key_made_on_one_api_process_works_on_the_other_and_deleted_is_refused_on_both(
    once: None, make_stack: StackFactory, fake: FakeModelServer, control_databases: ControlDatabases
) -> None:
    # Notices alone: the version poll is too slow to be what makes it within the second.
    stack, second = two_apis(make_stack, control_databases.fresh(), workers=1, CONTROL_POLL_SECONDS="60")
    first = stack.url
    admin = admin_client(first, ADMIN_KEY).admin.organization
    project = admin.projects.create(name="team")
    account = admin.projects.service_accounts.create(project.id, name="bot")
    assert account.api_key
    key = account.api_key.value
    assert status(first, key) == 200  # on the process that made it, at once
    took = seconds_until(lambda: status(second, key) == 200)
    assert took < WITHIN, f"a key made on one API process worked on another after {took:.3f}s"

    # On the model endpoints, as its project's tenant: its jobs are the project's.
    answer = httpx.post(f"{second}/generate", json={"job_id": "proj-job-1", "content": "hi"}, headers=auth(key))
    assert answer.status_code == 200 and answer.json()["content"] == "echo: hi"
    job = httpx.get(f"{first}/jobs/proj-job-1", headers=auth(key), timeout=10).json()
    assert job["tenant"] == project.id and job["status"] == "succeeded"
    assert httpx.get(f"{first}/jobs/proj-job-1", headers=auth("key-default"), timeout=10).status_code == 404
    sdk = openai.OpenAI(base_url=f"{second}/v1", api_key=key, max_retries=0, _strict_response_validation=True)
    chat = sdk.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "hello"}])
    assert chat.choices[0].message.content == "echo: hello"

    # Deleted on the first, refused on the second within the second.
    admin.projects.api_keys.delete(account.api_key.id, project_id=project.id)
    assert status(first, key) == 401
    took = seconds_until(lambda: status(second, key) == 401)
    assert took < WITHIN, f"a deleted key still worked on another API process for {took:.3f}s"

    # A project archived on the second: its keys refused on the first within the second.
    other = admin.projects.service_accounts.create(project.id, name="other")
    assert other.api_key
    seconds_until(lambda: status(second, other.api_key.value) == 200)
    admin_client(second, ADMIN_KEY).admin.organization.projects.archive(project.id)
    assert status(second, other.api_key.value) == 401
    took = seconds_until(lambda: status(first, other.api_key.value) == 401)
    assert took < WITHIN, f"an archived project's key still worked on another API process for {took:.3f}s"


def test_an_expiring_key_expires_on_every_process(
    once: None, make_stack: StackFactory, control_databases: ControlDatabases
) -> None:
    stack, second = two_apis(make_stack, control_databases.fresh())
    admin = admin_client(stack.url, ADMIN_KEY).admin.organization
    project = admin.projects.create(name="short-lived")
    account = admin.projects.service_accounts.create(project.id, name="temp", expires_in_seconds=2)
    assert account.api_key and account.api_key.expires_at == account.api_key.created_at + 2
    key, expires_at = account.api_key.value, account.api_key.expires_at
    seconds_until(lambda: status(second, key) == 200)
    assert status(stack.url, key) == 200
    for url in (stack.url, second):
        seconds_until(lambda url=url: status(url, key) == 401, timeout=10)
        assert time.time() >= expires_at - 1  # refused for its expiry, not before it
    # An admin key made to expire does too.
    temporary = admin.admin_api_keys.create(name="temp", expires_in_seconds=1)
    seconds_until(
        lambda: httpx.get(f"{second}/v1/organization/projects", headers=auth(temporary.value)).status_code == 401
    )


def test_a_change_whose_notice_was_lost_is_caught_by_the_version_poll(
    once: None, make_stack: StackFactory, control_databases: ControlDatabases
) -> None:
    url = control_databases.fresh()
    stack = make_stack(workers=0, API_KEYS="key-default", CONTROL_DATABASE_URL=url, CONTROL_POLL_SECONDS="0.5")
    # Made in the database directly: nobody announces it on Redis.
    store = ControlStore(engine_for(url))
    try:
        project = store.create_project(Actor("key_test", "test"), "made behind the API's back")
        made = store.create_service_account(Actor("key_test", "test"), project.id, "bot", True, None)
    finally:
        store.engine.dispose()
    assert made.value
    seconds_until(lambda: status(stack.url, made.value) == 200, timeout=5)


def test_keys_go_on_working_while_the_database_is_away(
    once: None, make_stack: StackFactory, control_databases: ControlDatabases
) -> None:
    if control_databases.kind != "postgresql":
        pytest.skip("a SQLite file is not a server that goes away")
    with TcpProxy(POSTGRES) as proxy:
        url = control_databases.fresh(("127.0.0.1", proxy.port))
        stack = make_stack(
            workers=0, API_KEYS="key-default", ADMIN_API_KEYS=ADMIN_KEY, CONTROL_DATABASE_URL=url,
            CONTROL_POLL_SECONDS="0.2",
        )  # fmt: skip
        admin = admin_client(stack.url, ADMIN_KEY).admin.organization
        project = admin.projects.create(name="resilient")
        account = admin.projects.service_accounts.create(project.id, name="bot")
        assert account.api_key
        key = account.api_key.value
        api = stack.processes.started[-1]

        proxy.cut()
        seconds_until(lambda: "control plane database unavailable" in api.output())  # its polls now fail
        assert [status(stack.url, key) for _ in range(20)] == [200] * 20
        assert status(stack.url, "key-default") == 200
        with pytest.raises(openai.InternalServerError) as refused:
            admin.projects.create(name="while away")
        assert refused.value.status_code == 503 and "control plane database unavailable" in str(refused.value)

        proxy.restore()
        seconds_until(lambda: "control plane database back" in api.output())
        later = admin.projects.service_accounts.create(project.id, name="after")
        assert later.api_key and status(stack.url, later.api_key.value) == 200
        assert status(stack.url, key) == 200


def refused_after(refused: Callable[[], bool], since: float, timeout: float = 10.0) -> float:
    """Seconds from `since` to the start of the first try that `refused()` (asked over
    and over): by then the key was refused."""
    while time.monotonic() - since < timeout:
        started = time.monotonic()
        if refused():
            return started - since
        time.sleep(0.01)
    raise AssertionError(f"not refused after {timeout}s")


def stream_refused(url: str, key: str) -> bool:
    """Whether a streaming chat completion asked with `key` is refused 401."""
    sdk = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=10)
    try:
        with sdk.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "hi"}], stream=True
        ) as stream:
            for _ in stream:
                pass
    except openai.AuthenticationError:
        return True
    return False


def websocket_refused(url: str, key: str) -> bool:
    """Whether a WebSocket connection to /v1/responses opened with `key` (the SDK's
    ``responses.connect()``) is refused 401 at its upgrade."""
    sdk = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=10)
    try:
        with sdk.responses.connect():
            return False
    except InvalidStatus as refused:
        assert refused.response.status_code == 401
        return True


def test_a_deleted_key_is_refused_on_streams_and_websockets_everywhere_and_its_running_stream_finishes(
    once: None, make_stack: StackFactory, fake: FakeModelServer, control_databases: ControlDatabases
) -> None:
    stack, second = two_apis(make_stack, control_databases.fresh(), workers=1, CONTROL_POLL_SECONDS="60")
    urls = [stack.url, second]
    admin = admin_client(stack.url, ADMIN_KEY).admin.organization
    project = admin.projects.create(name="streams")
    account = admin.projects.service_accounts.create(project.id, name="bot")
    assert account.api_key
    key = account.api_key.value
    seconds_until(lambda: status(second, key) == 200)
    assert not stream_refused(second, key) and not websocket_refused(second, key)

    sdk = openai.OpenAI(base_url=f"{second}/v1", api_key=key, max_retries=0, timeout=30,
                        _strict_response_validation=True)  # fmt: skip
    # A WebSocket connection of the key, open before it is deleted, and a long stream of it running.
    connection = sdk.responses.connect().enter()
    fake.extra_words, fake.chunk_delay = 30, 0.05  # a stream of about 1.6 s
    running = sdk.chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "long"}], stream=True
    )
    pieces = [next(iter(running)).choices[0].delta.content or ""]
    streamed = fake.completed_streams

    admin.projects.api_keys.delete(account.api_key.id, project_id=project.id)
    deleted = time.monotonic()
    assert fake.completed_streams == streamed, "the stream ended before its key was deleted: nothing tested"
    # Within the second, on every process: a plain request, a stream and a WebSocket
    # connection it opens are refused (each asked over and over, all at once).
    checks = {
        (url, kind): check
        for url in urls
        for kind, check in (
            ("request", lambda url=url: status(url, key) == 401),
            ("stream", lambda url=url: stream_refused(url, key)),
            ("websocket", lambda url=url: websocket_refused(url, key)),
        )
    }
    with ThreadPoolExecutor(len(checks)) as pool:
        took = dict(zip(checks, pool.map(lambda check: refused_after(check, deleted), checks.values()), strict=True))
    late = {f"{kind} on {url}": f"{seconds:.3f}s" for (url, kind), seconds in took.items() if seconds >= WITHIN}
    assert not late, f"a deleted key still let these in after a second: {late}"

    # The stream it began before is not cut: it runs to its end (as OpenAI's does).
    finish = None
    for chunk in running:
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    assert finish == "stop" and "".join(pieces).startswith("echo: long")
    assert len("".join(pieces).split()) > 30

    # The connection opened before stays open, but each response.create on it is a
    # request, its key checked as it is asked: refused, as OpenAI's error event.
    fake.extra_words, fake.chunk_delay = 0, 0.0
    connection.response.create(model="fake-model", input="after", store=False)
    events = []
    for event in connection:
        events.append(event)
        if event.type in ("error", "response.completed", "response.failed"):
            break
    connection.close()
    assert [event.type for event in events] == ["error"], events
    assert events[0].status == 401 and events[0].error.type == "authentication_error", events[0]
