"""The keys file's tenants seen as projects, read-only, through the openai SDK's admin
client (strict validation on): listed and read like any project, each change refused
with 400 naming the file where it is made, nothing of them written to the control
plane's database or its audit log; their keys are the file's and keep working."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from testing.control_databases import ControlDatabases
from testing.fake_model_server import FakeModelServer
from testing.openai_sdk import admin_client
from tests.conftest import StackFactory

pytestmark = pytest.mark.integration

ADMIN_KEY = "sk-admin-test-0d1c2b3a4f5e6d7c8b9a0f1e2d3c4b5a"
TENANTS = """
tenants:
  - name: research
    keys: ["key-research"]
    weight: 3
  - name: product
    keys: ["key-product"]
"""


def test_the_keys_files_tenants_are_projects_that_cannot_be_changed_here(
    make_stack: StackFactory,
    fake: FakeModelServer,
    control_databases: ControlDatabases,
    broker_env: dict[str, str],
    tmp_path: Path,
) -> None:
    if not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("once is enough: the control plane is the same whichever the broker")
    keys_file = tmp_path / "tenants.yaml"
    keys_file.write_text(TENANTS)
    written = int(os.stat(keys_file).st_mtime)
    stack = make_stack(
        workers=1,
        API_KEYS_FILE=str(keys_file),
        ADMIN_API_KEYS=ADMIN_KEY,
        CONTROL_DATABASE_URL=control_databases.fresh(),
    )
    admin = admin_client(stack.url, ADMIN_KEY).admin.organization
    made = admin.projects.create(name="made here")

    # Listed first, in the file's order (default: keys that name no tenant), then those made here.
    listed = list(admin.projects.list(limit=2))
    assert [project.id for project in listed] == ["default", "research", "product", made.id]
    for project in listed[:3]:
        assert project.name == project.id and project.status == "active" and project.archived_at is None
        assert project.created_at == written  # the file's last change
        assert admin.projects.retrieve(project.id) == project
        # Their keys are the file's: none listed here, no service account.
        assert admin.projects.service_accounts.list(project.id).data == []
        assert admin.projects.api_keys.list(project.id).data == []

    # Every change: 400, naming the file where it is made.
    changes: dict[str, Callable[[], Any]] = {
        "update": lambda: admin.projects.update("research", name="renamed"),
        "archive": lambda: admin.projects.archive("research"),
        "a service account": lambda: admin.projects.service_accounts.create("research", name="bot"),
        "a service account only": lambda: admin.projects.service_accounts.create(
            "product", name="bot", extra_body={"create_service_account_only": True}
        ),
        "a key of an account": lambda: admin.projects.service_accounts.api_keys.create(
            "svc_acct_000000000000000000000000", project_id="research"
        ),
        "a service account deleted": lambda: admin.projects.service_accounts.delete(
            "svc_acct_000000000000000000000000", project_id="research"
        ),
        "a key deleted": lambda: admin.projects.api_keys.delete("key_000000000000000000000000", project_id="default"),
    }
    for what, change in changes.items():
        with pytest.raises(openai.BadRequestError) as refused:
            change()
        assert refused.value.status_code == 400, what
        message = refused.value.message
        assert "is a tenant of the keys file" in message and "API_KEYS_FILE" in message, (what, message)
    # Nothing of it reached the database or the audit log.
    assert [project.id for project in admin.projects.list(limit=100)] == ["default", "research", "product", made.id]
    assert admin.audit_logs.list(project_ids=["default", "research", "product"]).data == []
    assert admin.audit_logs.list(resource_ids=["default", "research", "product"]).data == []

    # They are still the tenants they were: the file's keys work, as their project.
    answer = httpx.post(
        f"{stack.url}/generate",
        json={"job_id": "declared-1", "content": "hi"},
        headers={"Authorization": "Bearer key-research"},
        timeout=30,
    )
    assert answer.status_code == 200 and answer.json()["content"] == "echo: hi"
    job = httpx.get(f"{stack.url}/jobs/declared-1", headers={"Authorization": "Bearer key-research"}, timeout=10)
    assert job.json()["tenant"] == "research"
