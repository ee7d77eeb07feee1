"""The Administration API's bodies and answers: names PostgreSQL can store, fields the
gateway cannot honour refused by name, and answers that are the SDK's types exactly."""

from __future__ import annotations

from typing import Any

import pytest
from openai.types.admin.organization import AdminAPIKey, AdminAPIKeyCreateResponse, AuditLogListResponse, Project
from openai.types.admin.organization.projects import ProjectAPIKey, ProjectServiceAccount, ServiceAccountCreateResponse
from openai.types.admin.organization.projects.project_model_permissions import ProjectModelPermissions
from openai.types.admin.organization.projects.project_model_permissions_deleted import (
    ProjectModelPermissionsDeleted,
)
from pydantic import ValidationError

from api.admin import types
from shared.control.models import AdminKey, AuditEvent, ModelPermissions, ProjectKey, ServiceAccount
from shared.control.models import Project as ProjectRow
from shared.tenants import Tenant

pytestmark = pytest.mark.unit


def refusal(model: type[Any], body: dict[str, Any]) -> tuple[str, str]:
    with pytest.raises(ValidationError) as refused:
        model.model_validate(body)
    error = refused.value.errors()[0]
    return ".".join(str(part) for part in error["loc"]), error["msg"]


@pytest.mark.parametrize(
    "name", ["", "   ", "x" * 257, "a\x00b", "tab\there", "line\nbreak", "\x7f", 12, None, ["x"], True]
)
def test_a_name_is_1_to_256_characters_without_control_characters(name: Any) -> None:
    for model in (types.CreateAdminKey, types.CreateProject, types.CreateServiceAccount):
        where, _ = refusal(model, {"name": name})
        assert where.startswith("name")


def test_a_name_may_be_any_other_text() -> None:
    for name in ("Recherche ✓ équipe", "x" * 256, "研究チーム", " padded "):
        assert types.CreateProject.model_validate({"name": name}).name == name


def test_what_the_gateway_cannot_honour_is_refused_by_name() -> None:
    assert refusal(types.CreateProject, {"name": "p", "residency": "EU_STORAGE_PROCESSING"})[0] == "residency"
    assert refusal(types.UpdateProject, {"geography": "EU"})[0] == "geography"
    assert refusal(types.CreateKey, {"scopes": ["api.model.read"]})[0] == "scopes"
    _, message = refusal(
        types.CreateServiceAccount, {"name": "a", "create_service_account_only": True, "expires_in_seconds": 60}
    )
    assert "expires_in_seconds" in message
    assert refusal(types.CreateAdminKey, {"name": "k", "expires_in_seconds": 0})[0] == "expires_in_seconds"
    assert refusal(types.CreateAdminKey, {"name": "k", "expires_in_seconds": "60"})[0] == "expires_in_seconds"
    # What the SDK sends as null, or a field it adds, is fine.
    body = {"name": "p", "residency": None, "geography": None, "external_key_id": None, "extra": 1}
    assert types.CreateProject.model_validate(body).name == "p"
    assert types.CreateKey.model_validate({"scopes": []}).scopes == []


def test_each_answer_is_the_sdks_type_field_for_field() -> None:
    project = ProjectRow(id="proj_1", name="p", created_at=10, archived_at=None)
    account = ServiceAccount(id="svc_acct_1", project_id="proj_1", name="bot", role="member", created_at=11)
    key = ProjectKey(
        id="key_1", project_id="proj_1", service_account_id="svc_acct_1", name="bot", digest=b"\0" * 32,
        redacted_value="sk-proj-...abcd", created_at=12, expires_at=99,
    )  # fmt: skip
    admin = AdminKey(
        id="key_2", name="ops", digest=b"\1" * 32, redacted_value="sk-admin-...wxyz", created_at=13, expires_at=None,
        created_by="key_cfg_0",
    )  # fmt: skip
    event = AuditEvent(
        id="audit_log-1", type="project.created", effective_at=14, actor_id="key_cfg_0", project_id="proj_1",
        project_name="p", resource_id="proj_1", details={"id": "proj_1", "data": {"name": "p", "title": "p"}},
    )  # fmt: skip
    checked = [
        (Project, types.project(project)),
        (Project, types.declared_project(Tenant("research"), 0)),
        (ProjectServiceAccount, types.service_account(account)),
        (ServiceAccountCreateResponse, {**types.service_account(account), "api_key": types.new_key(key, "sk-proj-x")}),
        (ProjectAPIKey, types.project_key(key, account, active=False)),
        (AdminAPIKey, types.admin_key(admin)),
        (AdminAPIKeyCreateResponse, types.admin_key(admin, "sk-admin-x")),
        (AuditLogListResponse, types.audit_event(event)),
        (ProjectModelPermissions, types.model_permissions(None)),
        (ProjectModelPermissions, types.model_permissions(ModelPermissions(mode="allow_list", model_ids=["a"]))),
        (ProjectModelPermissionsDeleted, types.model_permissions_deleted(True)),
    ]
    for sdk_type, answer in checked:
        parsed = sdk_type.model_validate(answer)  # pydantic's validation: every field of its type
        assert parsed.model_extra in (None, {}), (sdk_type, parsed.model_extra)
    audit = AuditLogListResponse.model_validate(types.audit_event(event))
    assert audit.project_created and audit.project_created.data and audit.project_created.data.name == "p"
    assert audit.project and audit.project.id == "proj_1"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"mode": "allow_list"}, "model_ids"),
        ({"model_ids": []}, "mode"),
        ({"mode": "only", "model_ids": []}, "mode"),
        ({"mode": "allow_list", "model_ids": "small"}, "model_ids"),
        ({"mode": "allow_list", "model_ids": {"small": 1}}, "model_ids"),
        ({"mode": "allow_list", "model_ids": ["small"] * 1000}, "model_ids"),
        ({"mode": "allow_list", "model_ids": ["small", "\ud800"]}, "model_ids.1"),
        ({"mode": "allow_list", "model_ids": ["small", "a\x00b"]}, "model_ids.1"),
        ({"mode": "allow_list", "model_ids": ["x" * 300]}, "model_ids.0"),
        ({"mode": "allow_list", "model_ids": [12]}, "model_ids.0"),
        ({"mode": "allow_list", "model_ids": [""]}, "model_ids.0"),
    ],
)
def test_model_permissions_are_a_mode_and_a_list_of_model_names(body: dict[str, Any], field: str) -> None:
    assert refusal(types.UpdateModelPermissions, body)[0] == field


def test_a_model_permissions_change_is_an_audit_event_the_sdk_reads() -> None:
    changes = {"model_permissions": {"mode": "deny_list", "model_ids": ["large"]}}
    event = AuditEvent(
        id="audit_log-2", type="project.updated", effective_at=15, actor_id="key_cfg_0", project_id="proj_1",
        project_name="p", resource_id="proj_1", details={"id": "proj_1", "changes_requested": changes},
    )  # fmt: skip
    audit = AuditLogListResponse.model_validate(types.audit_event(event))
    assert audit.project_updated and audit.project_updated.changes_requested
    assert audit.project_updated.changes_requested.model_extra == changes
