"""The Administration API (``/v1/organization/*``) through the official ``openai`` SDK's
admin client, strict validation on, against a control plane in SQLite and in PostgreSQL:
admin API keys, projects, service accounts and their keys, the audit log; who may call
it; and the worst inputs a caller can send."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import allow_header_conformance, positive_data_acceptance
from schemathesis.config import SchemathesisConfig

from api.main import create_app
from shared.config import Config
from shared.tenants import TENANT_PATTERN
from testing.control_databases import ControlDatabases
from testing.fake_model_server import FakeModelServer
from testing.openai_sdk import admin_client
from tests.conftest import Stack, _stack_factory

pytestmark = pytest.mark.integration

ADMIN_KEY = "sk-admin-test-4f1c9a0e7b2d4c6e8a1f3b5d7c9e0a2b"
TENANT_KEY = "key-research-1"
TENANTS = f"""
tenants:
  - name: research
    keys: ["{TENANT_KEY}"]
"""


@pytest.fixture(scope="module")
def organization(
    fake_server: FakeModelServer,
    broker_env: dict[str, str],
    control_databases: ControlDatabases,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """One API (no worker: nothing here runs a job) with a control plane of its own."""
    if not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("once is enough: the control plane is the same whichever the broker")
    folder = tmp_path_factory.mktemp("organization")
    keys_file = folder / "tenants.yaml"
    keys_file.write_text(TENANTS)
    make, cleanup = _stack_factory(folder, fake_server, broker_env)
    yield make(
        workers=0,
        ADMIN_API_KEYS=ADMIN_KEY,
        API_KEYS_FILE=str(keys_file),
        CONTROL_DATABASE_URL=control_databases.fresh(),
        LOG_FORMAT="json",
    )
    cleanup()


def org(stack: Stack, key: str = ADMIN_KEY) -> Any:
    return admin_client(stack.url, key).admin.organization


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def works(stack: Stack, key: str) -> int:
    """The status a tenant's endpoint answers `key` with (200: the key works)."""
    return httpx.get(f"{stack.url}/v1/files", headers=auth(key), timeout=10).status_code


def test_admin_api_keys_are_made_listed_read_and_deleted(organization: Stack) -> None:
    admin = org(organization)
    made = admin.admin_api_keys.create(name="ops on call", expires_in_seconds=3600)
    assert made.value.startswith("sk-admin-") and len(made.value) > 40
    assert made.redacted_value == f"sk-admin-...{made.value[-4:]}"
    assert made.expires_at == made.created_at + 3600 and made.name == "ops on call"
    # The new key manages the organization too, and what it does is its own in the audit log.
    project = org(organization, made.value).projects.create(name="made by the new key")
    (event,) = admin.audit_logs.list(resource_ids=[project.id]).data
    assert event.actor and event.actor.api_key and event.actor.api_key.id == made.id
    listed = {key.id: key for key in admin.admin_api_keys.list(limit=100)}
    assert listed[made.id].redacted_value == made.redacted_value
    assert "value" not in (listed[made.id].model_extra or {})  # its value is shown once, at creation
    assert admin.admin_api_keys.retrieve(made.id).name == "ops on call"
    newest = admin.admin_api_keys.list(order="desc", limit=1).data
    assert [key.id for key in newest] == [made.id]

    deleted = admin.admin_api_keys.delete(made.id)
    assert deleted.id == made.id and deleted.deleted is True
    with pytest.raises(openai.NotFoundError):
        admin.admin_api_keys.retrieve(made.id)
    with pytest.raises(openai.AuthenticationError):
        org(organization, made.value).projects.list()


def test_projects_are_made_listed_read_renamed_and_archived(organization: Stack) -> None:
    admin = org(organization)
    project = admin.projects.create(name="Recherche ✓ équipe")
    assert project.id.startswith("proj_") and re.fullmatch(TENANT_PATTERN, project.id)
    assert project.status == "active" and project.archived_at is None and project.name == "Recherche ✓ équipe"
    assert admin.projects.retrieve(project.id) == project

    renamed = admin.projects.update(project.id, name="Research")
    assert renamed.name == "Research" and renamed.id == project.id
    assert admin.projects.retrieve(project.id).name == "Research"

    # Every project, a page at a time (the SDK follows last_id): the keys file's tenants
    # first, read-only, then those made here, in the order they were made.
    more = [admin.projects.create(name=f"paged {n}").id for n in range(3)]
    ids = [found.id for found in admin.projects.list(limit=1)]
    assert ids[:2] == ["default", "research"]
    assert ids.index(project.id) < ids.index(more[0]) < ids.index(more[1]) < ids.index(more[2])
    assert len(ids) == len(set(ids))

    archived = admin.projects.archive(project.id)
    assert archived.status == "archived" and archived.archived_at is not None
    assert project.id not in [found.id for found in admin.projects.list(limit=100)]
    assert project.id in [found.id for found in admin.projects.list(limit=100, include_archived=True)]
    assert admin.projects.archive(project.id).archived_at == archived.archived_at  # once archived, it stays so

    declared = admin.projects.retrieve("research")
    assert declared.name == "research" and declared.status == "active"
    with pytest.raises(openai.BadRequestError, match="API_KEYS_FILE"):
        admin.projects.update("research", name="renamed")
    with pytest.raises(openai.BadRequestError, match="API_KEYS_FILE"):
        admin.projects.archive("research")
    with pytest.raises(openai.NotFoundError):
        admin.projects.retrieve("proj_000000000000000000000000")


def test_service_accounts_and_their_keys(organization: Stack) -> None:
    admin = org(organization)
    project = admin.projects.create(name="keys")
    account = admin.projects.service_accounts.create(project.id, name="nightly eval")
    assert account.role == "member" and account.api_key is not None
    first = account.api_key
    assert first.value.startswith("sk-proj-") and first.expires_at is None
    assert works(organization, first.value) == 200

    assert [found.id for found in admin.projects.service_accounts.list(project.id)] == [account.id]
    assert admin.projects.service_accounts.retrieve(account.id, project_id=project.id).name == "nightly eval"
    key = admin.projects.api_keys.retrieve(first.id, project_id=project.id)
    assert key.redacted_value == f"sk-proj-...{first.value[-4:]}" and key.owner_project_access == "active"
    assert key.owner.type == "service_account" and key.owner.service_account
    assert key.owner.service_account.id == account.id
    second = admin.projects.service_accounts.api_keys.create(account.id, project_id=project.id, name="second")
    assert works(organization, second.value) == 200
    listed = [found.id for found in admin.projects.api_keys.list(project.id, limit=1)]
    assert listed == [first.id, second.id]
    assert admin.projects.api_keys.list(project.id, owner_project_access="inactive").data == []

    keyless = admin.projects.service_accounts.create(project.id, name="no key yet", create_service_account_only=True)
    assert keyless.api_key is None and keyless.role == "none"

    assert admin.projects.api_keys.delete(first.id, project_id=project.id).deleted is True
    assert works(organization, first.value) == 401 and works(organization, second.value) == 200
    with pytest.raises(openai.NotFoundError):
        admin.projects.api_keys.retrieve(first.id, project_id=project.id)

    # A service account deleted takes its keys with it.
    assert admin.projects.service_accounts.delete(account.id, project_id=project.id).deleted is True
    assert works(organization, second.value) == 401
    assert [found.id for found in admin.projects.service_accounts.list(project.id)] == [keyless.id]
    assert admin.projects.api_keys.list(project.id).data == []

    # An archived project's keys stop working, and it gets no new ones.
    kept = admin.projects.service_accounts.create(project.id, name="kept")
    assert kept.api_key and works(organization, kept.api_key.value) == 200
    admin.projects.archive(project.id)
    assert works(organization, kept.api_key.value) == 401
    (inactive,) = admin.projects.api_keys.list(project.id, owner_project_access="any").data
    assert inactive.owner_project_access == "inactive"
    with pytest.raises(openai.ConflictError, match="archived"):
        admin.projects.service_accounts.create(project.id, name="late")
    # Another project's id finds nothing of this one's.
    other = admin.projects.create(name="other")
    with pytest.raises(openai.NotFoundError):
        admin.projects.service_accounts.retrieve(keyless.id, project_id=other.id)


def test_the_audit_log_records_each_action_and_never_a_key(organization: Stack) -> None:
    admin = org(organization)
    project = admin.projects.create(name="audited")
    account = admin.projects.service_accounts.create(project.id, name="bot", expires_in_seconds=600)
    assert account.api_key
    admin.projects.update(project.id, name="audited twice")
    admin.projects.api_keys.delete(account.api_key.id, project_id=project.id)
    admin.projects.archive(project.id)
    admin_key = admin.admin_api_keys.create(name="temporary")
    admin.admin_api_keys.delete(admin_key.id)

    events = list(admin.audit_logs.list(project_ids=[project.id], limit=2))  # page after page
    assert [event.type for event in events] == [
        "project.archived", "api_key.deleted", "project.updated", "api_key.created", "service_account.created",
        "project.created",
    ]  # fmt: skip
    assert all(event.project and event.project.id == project.id for event in events)
    assert all(
        event.actor and event.actor.api_key and event.actor.api_key.id.startswith("key_cfg_") for event in events
    )
    created = events[-1].project_created
    assert created and created.id == project.id and created.data and created.data.name == "audited"
    assert events[3].api_key_created and events[3].api_key_created.id == account.api_key.id
    assert events[1].api_key_deleted and events[1].api_key_deleted.id == account.api_key.id
    # Filters: by type, by object, by time; and a page back (before) from the oldest.
    types = admin.audit_logs.list(project_ids=[project.id], event_types=["project.created", "project.archived"])
    assert [event.type for event in types.data] == ["project.archived", "project.created"]
    (about_key,) = admin.audit_logs.list(resource_ids=[admin_key.id], event_types=["tenant.admin_api_key.created"]).data
    assert about_key.id
    since = events[-1].effective_at
    assert len(admin.audit_logs.list(project_ids=[project.id], effective_at={"gte": since}, limit=100).data) == 6
    assert admin.audit_logs.list(project_ids=[project.id], effective_at={"lt": since}).data == []
    newer = admin.audit_logs.list(project_ids=[project.id], before=events[-1].id, limit=2).data
    assert [event.id for event in newer] == [events[-3].id, events[-2].id]
    assert admin.audit_logs.list(actor_emails=["ops@example.com"]).data == []  # no actor here has an e-mail

    # Never a key's value, nor its digest, anywhere in the log.
    raw = httpx.get(f"{organization.url}/v1/organization/audit_logs?limit=100", headers=auth(ADMIN_KEY), timeout=10)
    assert raw.status_code == 200
    for secret in (account.api_key.value, admin_key.value, ADMIN_KEY):
        assert secret not in raw.text and hashlib.sha256(secret.encode()).hexdigest() not in raw.text
    # Nor in the API's log.
    logged = organization.processes.started[-1].output()
    assert account.api_key.value not in logged and admin_key.value not in logged and ADMIN_KEY not in logged


def test_the_audit_logs_filters_hold_written_plainly_as_curl_sends_them(organization: Stack) -> None:
    """``project_ids=…`` (as a curl user writes it, and as the usage endpoints take it) filters
    as ``project_ids[]=…`` (the SDK's) does: it was dropped, and every project's events shown."""
    admin = org(organization)
    mine, other = admin.projects.create(name="filtered"), admin.projects.create(name="not asked for")
    url = f"{organization.url}/v1/organization/audit_logs"

    def events(query: str) -> list[dict[str, Any]]:
        answer = httpx.get(f"{url}?{query}", headers=auth(ADMIN_KEY), timeout=10)
        assert answer.status_code == 200, (query, answer.text)
        return answer.json()["data"]

    for query in (f"project_ids={mine.id}", f"project_ids[]={mine.id}", f"resource_ids={mine.id}"):
        assert {(event.get("project") or {}).get("id") for event in events(f"{query}&limit=100")} == {mine.id}, query
    assert events(f"project_ids={mine.id}&project_ids[]={other.id}&limit=100")  # both forms, together
    assert events("event_types=project.nothing_like_it") == []
    assert events(f"actor_ids=key_0&project_ids={mine.id}") == []
    # A range is given by its bounds; a bare effective_at is refused, naming it, not dropped.
    answer = httpx.get(f"{url}?effective_at=1764547200", headers=auth(ADMIN_KEY), timeout=10)
    assert answer.status_code == 400 and "effective_at" in answer.json()["error"]["param"], answer.text
    # Nor is a list written with indices (as qs and PHP write it) dropped.
    answer = httpx.get(f"{url}?project_ids[0]={mine.id}", headers=auth(ADMIN_KEY), timeout=10)
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "project_ids[0]", answer.text
    answer = httpx.get(f"{url}?project_ids=%25", headers=auth(ADMIN_KEY), timeout=10)
    assert answer.status_code == 400 and answer.json()["error"]["param"].startswith("project_ids"), answer.text


def admin_routes(stack: Stack) -> list[tuple[str, str]]:
    """Every route of /v1/organization, from the API's own schema, with ids filled in."""
    schema = httpx.get(f"{stack.url}/openapi.json", timeout=10).json()
    ids = {"{project_id}": "proj_0", "{service_account_id}": "svc_acct_0", "{key_id}": "key_0", "{api_key_id}": "key_0",
           "{rate_limit_id}": "rl-x"}  # fmt: skip
    routes = []
    for path, methods in schema["paths"].items():
        if path.startswith("/v1/organization"):
            for placeholder, value in ids.items():
                path = path.replace(placeholder, value)
            routes += [(method.upper(), path) for method in methods]
    return routes


def test_only_admin_api_keys_reach_the_organization(organization: Stack) -> None:
    routes = admin_routes(organization)
    # 18 of projects, keys and the audit log; 2 of rate limits; usage.completions,
    # usage.embeddings, costs; model_permissions' and spend_limit's retrieve, update, delete.
    assert len(routes) == 29
    project = org(organization).projects.create(name="caller")
    account = org(organization).projects.service_accounts.create(project.id, name="caller")
    assert account.api_key
    for method, path in routes:
        url = f"{organization.url}{path}"
        nobody = httpx.request(method, url, json={"name": "x"}, timeout=10)
        assert nobody.status_code == 401, (method, path)
        assert nobody.json()["error"]["type"] == "authentication_error"
        for key in (account.api_key.value, TENANT_KEY):  # a project's key, a keys file tenant's
            refused = httpx.request(method, url, json={"name": "x"}, headers=auth(key), timeout=10)
            assert refused.status_code == 403, (method, path, key)
        wrong = httpx.request(method, url, json={"name": "x"}, headers=auth("sk-admin-not-a-key"), timeout=10)
        assert wrong.status_code == 401, (method, path)


def test_admin_api_keys_cannot_call_the_model_endpoints(organization: Stack) -> None:
    chat = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}
    for method, path, body in (
        ("POST", "/v1/chat/completions", chat),
        ("POST", "/v1/completions", {"model": "fake-model", "prompt": "hi"}),
        ("POST", "/v1/embeddings", {"model": "fake-model", "input": "hi"}),
        ("POST", "/v1/responses", {"model": "fake-model", "input": "hi"}),
        ("GET", "/v1/models", None),
        ("GET", "/v1/files", None),
        ("POST", "/generate", {"content": "hi"}),
        ("GET", "/usage", None),
    ):
        answer = httpx.request(method, f"{organization.url}{path}", json=body, headers=auth(ADMIN_KEY), timeout=10)
        assert answer.status_code == 403, (path, answer.text)
        assert "admin API key" in answer.text
    # /metrics and /scaling, the operators', answer it.
    assert httpx.get(f"{organization.url}/metrics", headers=auth(ADMIN_KEY), timeout=10).status_code == 200


# Names no project, key or service account may have, each with what is wrong with it.
BAD_NAMES = (
    b'{"name": "' + b"x" * 300 + b'"}',  # past 256 characters
    b'{"name": "\\ud800"}',  # a lone surrogate: not text
    b'{"name": "a\\u0000b"}',  # NUL, which PostgreSQL cannot store
    b'{"name": "line\\nbreak"}',
    b'{"name": "   "}',
    b'{"name": 12}',
    b'{"name": ["x"]}',
)


def test_the_worst_inputs_are_refused_naming_the_field(organization: Stack) -> None:
    project = org(organization).projects.create(name="targets")
    headers = {**auth(ADMIN_KEY), "Content-Type": "application/json"}

    def refused(method: str, path: str, field: str, **sent: Any) -> None:
        answer = httpx.request(method, f"{organization.url}{path}", headers=headers, timeout=10, **sent)
        assert 400 <= answer.status_code < 500, (path, sent, answer.status_code, answer.text)
        error = answer.json()["error"]
        assert field in f"{error['param']} {error['message']}", (path, sent, error)

    for path in (
        "/v1/organization/admin_api_keys",
        "/v1/organization/projects",
        f"/v1/organization/projects/{project.id}",
        f"/v1/organization/projects/{project.id}/service_accounts",
    ):
        for body in BAD_NAMES:
            refused("POST", path, "name", content=body)
        huge = b'{"name": "' + "é".encode() * 600_000 + b'"}'
        assert httpx.post(f"{organization.url}{path}", headers=headers, content=huge, timeout=10).status_code == 413
    refused(
        "POST", "/v1/organization/admin_api_keys", "expires_in_seconds", json={"name": "x", "expires_in_seconds": -1}
    )
    refused("POST", "/v1/organization/projects", "residency", json={"name": "eu", "residency": "EU_STORAGE_PROCESSING"})
    refused(
        "POST", f"/v1/organization/projects/{project.id}/service_accounts", "expires_in_seconds",
        json={"name": "x", "create_service_account_only": True, "expires_in_seconds": 60},
    )  # fmt: skip
    for bad in ("x" * 300, "Proj_ü", "proj_%00", "proj_0%0a"):
        refused("GET", f"/v1/organization/projects/{bad}", "project_id")
        refused("GET", f"/v1/organization/projects/{project.id}/service_accounts/{bad}", "service_account_id")
        refused("DELETE", f"/v1/organization/projects/{project.id}/api_keys/{bad}", "api_key_id")
        refused("DELETE", f"/v1/organization/admin_api_keys/{bad}", "key_id")
    for query, field in (
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=abc", "limit"),
        ("limit=99999999999999999999999", "limit"),
        ("after=%00", "after"),
        ("after=" + "a" * 300, "after"),
        ("before=%ED%A0%80", "before"),
        ("effective_at[gt]=-1", "effective_at[gt]"),
        ("effective_at[lte]=1e400", "effective_at[lte]"),
        ("event_types[]=%00", "event_types[]"),
        ("project_ids[]=" + "p" * 200, "project_ids[]"),
    ):
        refused("GET", f"/v1/organization/audit_logs?{query}", field)
    refused("GET", "/v1/organization/projects?limit=0", "limit")
    refused("GET", "/v1/organization/admin_api_keys?order=sideways", "order")
    refused("GET", f"/v1/organization/projects/{project.id}/api_keys?owner_project_access=some", "owner_project_access")


def test_a_cursor_that_names_nothing_gives_an_empty_page(organization: Stack) -> None:
    admin = org(organization)
    assert admin.projects.list(after="proj_000000000000000000000000").data == []
    assert admin.audit_logs.list(after="audit_log-0").data == []


# The organization's routes fuzzed against their own schema, as an admin: whatever is
# sent, no 5xx, and every answer as the schema says. A schema-valid request may still be
# refused (an id that names nothing, 404; a keys file's project, read-only, 400; an
# archived project, 409), so positive_data_acceptance is not checked here.
ORGANIZATION = schemathesis.openapi.from_dict(
    create_app(Config(_env_file=None)).openapi(),  # type: ignore[call-arg]
    config=SchemathesisConfig.from_dict(
        {"checks": {"negative_data_rejection": {"expected-statuses": [400, 404, 405, 409, 413, 422]}}}
    ),
).include(path_regex="^/v1/organization/")


@ORGANIZATION.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_organization_holds_to_its_schema_whatever_an_admin_sends(
    case: schemathesis.Case, organization: Stack
) -> None:
    case.call_and_validate(
        base_url=organization.url, headers=auth(ADMIN_KEY), timeout=30,
        excluded_checks=[allow_header_conformance, positive_data_acceptance],
    )  # fmt: skip
