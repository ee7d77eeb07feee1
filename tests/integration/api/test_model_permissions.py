"""A project's model permissions (``projects.model_permissions``) through the official
``openai`` SDK's admin client, strict validation on, against a control plane in SQLite
and in PostgreSQL: set, read and removed; who may change them; the worst inputs; and
what they do: a model the project may not use answers exactly as one the registry does
not list (the same status, the same body but for the name) on every endpoint that takes
a model, /v1/models lists only the others, batches and fallbacks keep to them, another
project is not concerned, and a change made on one API process holds on another within
a second."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
from websockets.sync.client import connect

from testing.control_databases import ControlDatabases
from testing.fake_model_server import FakeModelServer, free_port
from testing.openai_sdk import admin_client, jsonl
from tests.conftest import Stack, StackFactory, _stack_factory

pytestmark = pytest.mark.integration

ADMIN_KEY = "sk-admin-test-2d4f6a8c0e1b3d5f7a9c1e3b5d7f9a0c"
DEFAULT_KEY = "key-default"  # API_KEYS': the default tenant, a keys file's, without permissions
WITHIN = 1.0  # the bound the control plane promises for a change to reach every API process
FORBIDDEN, UNKNOWN = "large", "no-such-model"
USER = {"role": "user", "content": "hi"}


def registry(url: str, **large: Any) -> str:
    """Three models of the fake server: small (alias quick, the default), large (falling
    back to small), embed."""
    return json.dumps({"models": [
        {"name": "small", "aliases": ["quick"], "url": url, "served_name": "fake-model"},
        {"name": "large", "url": url, "served_name": "fake-model", "fallbacks": ["small"], **large},
        {"name": "embed", "url": url, "served_name": "fake-model"},
    ], "default": "small"})  # fmt: skip


@pytest.fixture(scope="module")
def gateway(
    fake_server: FakeModelServer,
    broker_env: dict[str, str],
    control_databases: ControlDatabases,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """One API and a worker, on a control plane of their own."""
    if not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("once is enough: model permissions are the API's, the same whichever the broker")
    make, cleanup = _stack_factory(tmp_path_factory.mktemp("permissions"), fake_server, broker_env)
    yield make(
        ADMIN_API_KEYS=ADMIN_KEY,
        API_KEYS=DEFAULT_KEY,
        CONTROL_DATABASE_URL=control_databases.fresh(),
        MODELS=registry(fake_server.url),
    )
    cleanup()


def org(url: str) -> Any:
    return admin_client(url, ADMIN_KEY).admin.organization


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def project_key(url: str, name: str) -> tuple[str, str]:
    """A new project's id, and a key of it."""
    admin = org(url)
    project = admin.projects.create(name=name)
    account = admin.projects.service_accounts.create(project.id, name="bot")
    assert account.api_key
    return project.id, account.api_key.value


def test_model_permissions_are_set_read_and_removed(gateway: Stack) -> None:
    admin = org(gateway.url)
    project = admin.projects.create(name="permissions")
    every = admin.projects.model_permissions.retrieve(project.id)
    assert (every.mode, every.api_model_ids, every.object) == ("deny_list", [], "project.model_permissions")

    made = admin.projects.model_permissions.update(project.id, mode="allow_list", model_ids=["quick", "embed"])
    assert (made.mode, made.api_model_ids) == ("allow_list", ["quick", "embed"])
    assert admin.projects.model_permissions.retrieve(project.id) == made
    changed = admin.projects.model_permissions.update(project.id, mode="deny_list", model_ids=["large"])
    assert admin.projects.model_permissions.retrieve(project.id) == changed

    deleted = admin.projects.model_permissions.delete(project.id)
    assert (deleted.deleted, deleted.object) == (True, "project.model_permissions.deleted")
    assert admin.projects.model_permissions.retrieve(project.id) == every
    assert admin.projects.model_permissions.delete(project.id).deleted is False  # none left to delete

    # Each change in the audit log: who, what, on which project.
    events = admin.audit_logs.list(resource_ids=[project.id], event_types=["project.updated"]).data
    assert [(event.project_updated.changes_requested.model_extra if event.project_updated and
             event.project_updated.changes_requested else None) for event in events] == [
        {"model_permissions": None},
        {"model_permissions": {"mode": "deny_list", "model_ids": ["large"]}},
        {"model_permissions": {"mode": "allow_list", "model_ids": ["quick", "embed"]}},
    ]  # fmt: skip
    assert all(event.actor and event.actor.api_key and event.project for event in events)

    # A keys file's tenant may use every model, and is changed in the file, not here.
    assert admin.projects.model_permissions.retrieve("default") == every
    with pytest.raises(openai.BadRequestError, match="API_KEYS_FILE"):
        admin.projects.model_permissions.update("default", mode="deny_list", model_ids=["large"])
    with pytest.raises(openai.BadRequestError, match="API_KEYS_FILE"):
        admin.projects.model_permissions.delete("default")
    with pytest.raises(openai.NotFoundError):
        admin.projects.model_permissions.retrieve("proj_000000000000000000000000")
    with pytest.raises(openai.NotFoundError):
        admin.projects.model_permissions.update("proj_000000000000000000000000", mode="deny_list", model_ids=[])


def test_only_an_admin_key_reaches_model_permissions(gateway: Stack) -> None:
    project, key = project_key(gateway.url, "callers")
    path = f"{gateway.url}/v1/organization/projects/{project}/model_permissions"
    body = {"mode": "deny_list", "model_ids": ["large"]}
    for method in ("GET", "POST", "DELETE"):
        assert httpx.request(method, path, json=body, timeout=10).status_code == 401, method
        for caller in (key, DEFAULT_KEY):  # a project's key, a keys file tenant's
            assert httpx.request(method, path, json=body, headers=auth(caller), timeout=10).status_code == 403
        assert httpx.request(method, path, json=body, headers=auth("sk-admin-x"), timeout=10).status_code == 401
    assert org(gateway.url).projects.model_permissions.retrieve(project).api_model_ids == []  # nothing stored


def test_the_worst_inputs_are_refused_naming_the_field_and_nothing_is_stored(gateway: Stack) -> None:
    admin = org(gateway.url)
    project = admin.projects.create(name="targets").id
    kept = admin.projects.model_permissions.update(project, mode="allow_list", model_ids=["small"])
    path = f"{gateway.url}/v1/organization/projects/{project}/model_permissions"
    headers = {**auth(ADMIN_KEY), "Content-Type": "application/json"}
    # A lone surrogate is no text: the body reader refuses it before the body is
    # validated, with 422 as on every route (api/http/json_body.py); all else is a 400.
    for body, field, status in (
        (b'{"mode": "allow_list", "model_ids": ["small", "no-such-model"]}', "model_ids[1]", 400),
        (b'{"mode": "allow_list", "model_ids": ' + json.dumps(["small"] * 1000).encode() + b"}", "model_ids", 400),
        (b'{"mode": "allow_list", "model_ids": ["small", "\\ud800"]}', "model_ids.1", 422),
        (b'{"mode": "allow_list", "model_ids": ["a\\u0000b"]}', "model_ids.0", 400),
        (b'{"mode": "allow_list", "model_ids": ["' + b"x" * 300 + b'"]}', "model_ids.0", 400),
        (b'{"mode": "allow_list", "model_ids": "small"}', "model_ids", 400),
        (b'{"mode": "allow_list", "model_ids": {"small": true}}', "model_ids", 400),
        (b'{"mode": "allow_list", "model_ids": [12]}', "model_ids.0", 400),
        (b'{"mode": "allow_list"}', "model_ids", 400),
        (b'{"mode": "everything", "model_ids": []}', "mode", 400),
        (b'{"mode": null, "model_ids": []}', "mode", 400),
        (b'{"model_ids": []}', "mode", 400),
        (b'["allow_list"]', "body", 400),
    ):
        answer = httpx.post(path, headers=headers, content=body, timeout=10)
        assert answer.status_code == status, (body[:80], answer.status_code, answer.text)
        error = answer.json()["error"]
        assert field in f"{error['param']} {error['message']}", (body[:80], error)
    assert admin.projects.model_permissions.retrieve(project) == kept


def test_a_forbidden_model_answers_exactly_as_an_unknown_one_on_every_endpoint(
    gateway: Stack, fake: FakeModelServer
) -> None:
    admin = org(gateway.url)
    project, key = project_key(gateway.url, "no large")
    admin.projects.model_permissions.update(project, mode="deny_list", model_ids=[FORBIDDEN])
    _, other_key = project_key(gateway.url, "everything")
    headers = auth(key)
    counter = iter(range(1_000_000))

    def job_id() -> str:
        return f"perm-{next(counter)}-{time.monotonic_ns()}"

    endpoints: list[tuple[str, Callable[[str], Any], str]] = [
        ("/v1/chat/completions", lambda m: {"model": m, "messages": [USER]}, "quick"),
        ("/v1/chat/completions", lambda m: {"model": "small", "messages": [USER], "fallbacks": [m]}, "embed"),
        ("/v1/completions", lambda m: {"model": m, "prompt": "hi"}, "small"),
        ("/v1/embeddings", lambda m: {"model": m, "input": "hi"}, "embed"),
        ("/v1/responses", lambda m: {"model": m, "input": "hi"}, "small"),
        ("/v1/responses/input_tokens", lambda m: {"model": m, "input": "hi"}, "small"),
        ("/v1/responses/compact", lambda m: {"model": m, "input": "hi"}, "small"),
        ("/v1/messages", lambda m: {"model": m, "max_tokens": 16, "messages": [USER]}, "small"),
        ("/v1/messages/count_tokens", lambda m: {"model": m, "messages": [USER]}, "small"),
        ("/generate", lambda m: {"job_id": job_id(), "content": "hi", "meta": {"model": m}}, "small"),
        ("/chat_completion", lambda m: {"job_id": job_id(), "messages": [USER], "meta": {"model": m}}, "quick"),
    ]
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        for path, body, allowed in endpoints:
            fake.reset()
            forbidden = client.post(path, json=body(FORBIDDEN), headers=headers)
            unknown = client.post(path, json=body(UNKNOWN), headers=headers)
            assert forbidden.status_code == unknown.status_code == 404, (path, forbidden.text, unknown.text)
            assert forbidden.content.replace(FORBIDDEN.encode(), UNKNOWN.encode()) == unknown.content, path
            assert FORBIDDEN.encode() not in unknown.content, path  # the models listed are those it may use
            assert fake.requests == [], path  # nothing ran
            assert client.post(path, json=body(allowed), headers=headers).status_code == 200, path
            # Another project, and a keys file's tenant, may use it.
            for caller in (other_key, DEFAULT_KEY):
                assert client.post(path, json=body(FORBIDDEN), headers=auth(caller)).status_code == 200, path

        # /v1/models lists only what the project may use, and shows nothing else.
        listed = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0,
                               _strict_response_validation=True).models  # fmt: skip
        assert [model.id for model in listed.list()] == ["small", "quick", "embed"]
        assert listed.retrieve("quick").id == "quick"
        forbidden = client.get(f"/v1/models/{FORBIDDEN}", headers=headers)
        unknown = client.get(f"/v1/models/{UNKNOWN}", headers=headers)
        assert forbidden.status_code == unknown.status_code == 404
        assert forbidden.content.replace(FORBIDDEN.encode(), UNKNOWN.encode()) == unknown.content
        everything = client.get("/v1/models", headers=auth(other_key)).json()["data"]
        assert [model["id"] for model in everything] == ["small", "quick", "large", "embed"]
        assert [m["name"] for m in client.get("/models", headers=headers).json()["models"]] == ["small", "embed"]

        # A batch's line naming it is a line naming an unknown model: the file is refused.
        def line(model: str) -> dict[str, Any]:
            return {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
                    "body": {"model": model, "messages": [USER]}}  # fmt: skip

        files = []
        for model in (FORBIDDEN, UNKNOWN):
            files.append(client.post("/v1/files", headers=headers, data={"purpose": "batch"},
                                     files={"file": ("in.jsonl", jsonl([line(model)]))}))  # fmt: skip
        assert files[0].status_code == files[1].status_code == 400, files[0].text
        assert files[0].content.replace(FORBIDDEN.encode(), UNKNOWN.encode()) == files[1].content
        allowed = client.post("/v1/files", headers=headers, data={"purpose": "batch"},
                              files={"file": ("in.jsonl", jsonl([line("quick")]))})  # fmt: skip
        assert allowed.status_code == 200, allowed.text

    # WebSocket mode: response.create naming it fails as naming an unknown model.
    socket = f"{gateway.url.replace('http', 'ws', 1)}/v1/responses"
    errors = []
    with connect(socket, additional_headers=headers, open_timeout=10) as connection:
        for model in (FORBIDDEN, UNKNOWN):
            connection.send(json.dumps({"type": "response.create", "model": model, "input": "hi", "store": False}))
            errors.append(connection.recv(timeout=30))
    assert json.loads(errors[0])["type"] == "error" and json.loads(errors[0])["status"] == 404, errors[0]
    assert str(errors[0]).replace(FORBIDDEN, UNKNOWN) == errors[1]


def test_a_batch_whose_project_was_denied_a_model_since_its_upload_fails_as_for_an_unknown_model(
    gateway: Stack,
) -> None:
    admin = org(gateway.url)
    project, key = project_key(gateway.url, "batches")
    sdk = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0, _strict_response_validation=True)
    line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": FORBIDDEN, "messages": [USER]}}  # fmt: skip
    uploaded = sdk.files.create(file=("in.jsonl", jsonl([line])), purpose="batch").id
    admin.projects.model_permissions.update(project, mode="deny_list", model_ids=[FORBIDDEN])
    batch = sdk.batches.create(input_file_id=uploaded, endpoint="/v1/chat/completions", completion_window="24h")
    deadline = time.monotonic() + 30
    while batch.status not in ("failed", "completed") and time.monotonic() < deadline:
        time.sleep(0.2)
        batch = sdk.batches.retrieve(batch.id)
    assert batch.status == "failed" and batch.errors and batch.errors.data
    (error,) = batch.errors.data
    assert error.line == 1 and error.message == (
        f"body.model: model '{FORBIDDEN}' is not served here; the models are: small, quick, embed"
    )


def test_a_job_never_falls_back_to_a_model_its_project_may_not_use(
    make_stack: StackFactory, broker_env: dict[str, str], fake: FakeModelServer, control_databases: ControlDatabases
) -> None:
    if not broker_env["RABBIT_MQ_HOST"] or control_databases.kind != "sqlite":
        pytest.skip("once is enough: fallbacks are the worker's, the same whichever the broker or database")
    # "large" has no server up (nothing listens at its port): after fallback_after, its
    # jobs run on "small", its fallback.
    dead = f"http://127.0.0.1:{free_port()}"
    large = {"servers": [{"url": dead}], "fallback_after": 0.2}
    models = json.loads(registry(fake.url, **large))
    del models["models"][1]["url"]
    stack = make_stack(ADMIN_API_KEYS=ADMIN_KEY, API_KEYS=DEFAULT_KEY, CONTROL_DATABASE_URL=control_databases.fresh(),
                       MODELS=json.dumps(models), LLM_DEADLINE="3", SERVER_FAILURES="1",
                       SERVER_PROBE_BACKOFF="0.2", SERVER_PROBE_MAX="0.4", WAIT_TIMEOUT="20")  # fmt: skip
    project, key = project_key(stack.url, "no fallback")
    org(stack.url).projects.model_permissions.update(project, mode="deny_list", model_ids=["quick"])
    with httpx.Client(base_url=stack.url, timeout=30) as client:
        chat = {"model": "large", "messages": [USER]}
        fell_back = client.post("/v1/chat/completions", json=chat, headers=auth(DEFAULT_KEY))
        assert fell_back.status_code == 200 and fell_back.headers["x-served-model"] == "small", fell_back.text
        embedded = client.post("/v1/embeddings", json={"model": "large", "input": "hi"}, headers=auth(DEFAULT_KEY))
        assert embedded.status_code == 200 and embedded.headers["x-served-model"] == "small", embedded.text
        fake.reset()
        for path, body in (("/v1/chat/completions", chat), ("/v1/embeddings", {"model": "large", "input": "hi"})):
            refused = client.post(path, json=body, headers=auth(key))
            assert refused.status_code == 502, (path, refused.text)
            assert "no server of model large took the job" in refused.text
        assert fake.requests == []  # never on small


def test_a_change_on_one_api_process_holds_on_another_within_a_second(
    make_stack: StackFactory, broker_env: dict[str, str], fake: FakeModelServer, control_databases: ControlDatabases
) -> None:
    if not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("once is enough: the control plane is the same whichever the broker")
    # Notices alone: the version poll is too slow to be what makes it within the second.
    stack = make_stack(workers=0, ADMIN_API_KEYS=ADMIN_KEY, API_KEYS=DEFAULT_KEY, CONTROL_POLL_SECONDS="60",
                       CONTROL_DATABASE_URL=control_databases.fresh(), MODELS=registry(fake.url))  # fmt: skip
    port = free_port()
    stack.processes.api(stack.env, port)
    first, second = stack.url, f"http://127.0.0.1:{port}"
    project, key = project_key(first, "across")

    def shown(url: str) -> int:
        return httpx.get(f"{url}/v1/models/{FORBIDDEN}", headers=auth(key), timeout=10).status_code

    seconds_until(lambda: shown(second) == 200)
    org(first).projects.model_permissions.update(project, mode="allow_list", model_ids=["small"])
    assert shown(first) == 404  # on the process that made it, at once
    took = seconds_until(lambda: shown(second) == 404)
    assert took < WITHIN, f"a model denied on one API process was still served on another for {took:.3f}s"
    org(second).projects.model_permissions.delete(project)
    assert shown(second) == 200
    took = seconds_until(lambda: shown(first) == 200)
    assert took < WITHIN, f"a model allowed again on one API process was refused on another for {took:.3f}s"


def seconds_until(done: Callable[[], bool], timeout: float = 10.0) -> float:
    """How long until `done()` holds (asked every 10 ms); fails past `timeout`."""
    started = time.monotonic()
    while not done():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not so after {timeout}s")
        time.sleep(0.01)
    return time.monotonic() - started
