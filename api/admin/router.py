"""OpenAI's Administration API, as the ``openai`` SDK's admin client calls it
(``OpenAI(admin_api_key=...).admin.organization...``): ``/v1/organization/`` admin API
keys, projects, their service accounts and API keys, their rate limits per model and
model permissions, and the audit log. Only admin API keys reach it (api/tenancy/guard.py:
401 without one, 403 for a project's key); errors are OpenAI's (400 naming the field at
fault, 404 for an id that is not there).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import Field, StringConstraints

from api.admin import types
from api.admin.serving import ControlPlane
from api.admin.usage import refuse_indexed
from api.deps import AdminDep
from api.openai.http import OpenAIRoute
from api.openai.types import ErrorBody
from shared.control.ids import KEY_ID_PATTERN, PROJECT_ID_PATTERN, SERVICE_ACCOUNT_ID_PATTERN
from shared.control.store import AuditFilter

ProjectId = Annotated[str, Path(pattern=PROJECT_ID_PATTERN)]
AccountId = Annotated[str, Path(pattern=SERVICE_ACCOUNT_ID_PATTERN)]
KeyId = Annotated[str, Path(pattern=KEY_ID_PATTERN)]
# A page's cursor: an object's id (one that names nothing gives an empty page).
CURSOR = r"^[A-Za-z0-9_.-]{1,128}$"
After = Annotated[str | None, Query(pattern=CURSOR)]
Limit = Annotated[int, Query(ge=1, le=100)]
# What a list of the audit log takes (the SDK sends lists as name[]=..., ranges as name[gt]=...).
Id = Annotated[str, StringConstraints(pattern=CURSOR)]
EventType = Annotated[str, StringConstraints(pattern=r"^[a-z_]+(\.[a-z_]+){1,4}$")]
Email = Annotated[str, StringConstraints(max_length=320)]
Seconds = Annotated[int, Field(ge=0, le=2**53)]
AUDIT_LISTS = frozenset({"event_types", "project_ids", "resource_ids", "actor_ids", "actor_emails"})
AUDIT_SINGLES = frozenset({"tenant_only", "after", "before", "limit"})
# A rate limit's id: ``rl-`` and a model's name (any printable characters, "/" too; no control
# character; bytes that are not UTF-8, read as U+FFFD, are refused by the control plane).
RATE_LIMIT_ID = r"^rl-[^\x00-\x1f\x7f-\x9f]{1,256}$"
RateLimitId = Annotated[str, Path(pattern=RATE_LIMIT_ID)]
RateLimitCursor = Annotated[str | None, Query(pattern=RATE_LIMIT_ID)]


def admin_router(plane: ControlPlane, route_class: type[OpenAIRoute]) -> APIRouter:
    """The Administration API over `plane`; `route_class` admits admin API keys only."""
    router = APIRouter(
        prefix="/v1/organization",
        route_class=route_class,
        tags=["organization"],
        responses={400: {"model": ErrorBody}, 401: {"model": ErrorBody}, 403: {"model": ErrorBody}},
    )
    missing: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody}}

    @router.post("/admin_api_keys")
    async def create_admin_api_key(body: types.CreateAdminKey, by: AdminDep) -> dict[str, Any]:
        """A new admin API key: its value is in this answer, and never again."""
        return await plane.create_admin_key(by, body)

    @router.get("/admin_api_keys")
    async def list_admin_api_keys(
        after: After = None, limit: Limit = 20, order: Literal["asc", "desc"] = "asc"
    ) -> dict[str, Any]:
        """The admin API keys made here (not those of ADMIN_API_KEYS), in the order they were made."""
        return await plane.admin_keys(after, limit, order)

    @router.get("/admin_api_keys/{key_id}", responses=missing)
    async def retrieve_admin_api_key(key_id: KeyId) -> dict[str, Any]:
        return await plane.admin_key(key_id)

    @router.delete("/admin_api_keys/{key_id}", responses=missing)
    async def delete_admin_api_key(key_id: KeyId, by: AdminDep) -> dict[str, Any]:
        """Delete the key: refused on every API process within a second."""
        return await plane.delete_admin_key(by, key_id)

    @router.post("/projects")
    async def create_project(body: types.CreateProject, by: AdminDep) -> dict[str, Any]:
        """A new project: a tenant, named by its id (``proj_…``) on its jobs, logs and metrics."""
        return await plane.create_project(by, body)

    @router.get("/projects")
    async def list_projects(after: After = None, limit: Limit = 20, include_archived: bool = False) -> dict[str, Any]:
        """The keys file's tenants (read-only), then the projects made here."""
        return await plane.projects(after, limit, include_archived)

    @router.get("/projects/{project_id}", responses=missing)
    async def retrieve_project(project_id: ProjectId) -> dict[str, Any]:
        return await plane.project(project_id)

    @router.post("/projects/{project_id}", responses=missing)
    async def update_project(project_id: ProjectId, body: types.UpdateProject, by: AdminDep) -> dict[str, Any]:
        """Rename the project (its id, the tenant's name, stays)."""
        return await plane.update_project(by, project_id, body)

    @router.post("/projects/{project_id}/archive", responses=missing)
    async def archive_project(project_id: ProjectId, by: AdminDep) -> dict[str, Any]:
        """Archive the project: its keys are refused on every API process within a second."""
        return await plane.archive_project(by, project_id)

    @router.get("/projects/{project_id}/spend_limit", responses=missing)
    async def retrieve_project_spend_limit(project_id: ProjectId) -> dict[str, Any]:
        """The project's hard spend limit, and whether it is refusing requests now (404: none set)."""
        return await plane.spend_limit(project_id)

    @router.post("/projects/{project_id}/spend_limit", responses=missing)
    async def update_project_spend_limit(
        project_id: ProjectId, body: types.UpdateSpendLimit, by: AdminDep
    ) -> dict[str, Any]:
        """Set (or replace) the project's hard spend limit, in cents of USD a UTC month: once
        its spend this month reaches it, its requests get 429 insufficient_quota on every
        API process (within a second of this answer) until it is raised or the month ends."""
        return await plane.update_spend_limit(by, project_id, body)

    @router.delete("/projects/{project_id}/spend_limit", responses=missing)
    async def delete_project_spend_limit(project_id: ProjectId, by: AdminDep) -> dict[str, Any]:
        """Remove the project's hard spend limit (404: none set)."""
        return await plane.delete_spend_limit(by, project_id)

    @router.post("/projects/{project_id}/service_accounts", responses=missing)
    async def create_service_account(
        project_id: ProjectId, body: types.CreateServiceAccount, by: AdminDep
    ) -> dict[str, Any]:
        """A service account with an API key (its value in this answer, and never again)."""
        return await plane.create_service_account(by, project_id, body)

    @router.get("/projects/{project_id}/service_accounts", responses=missing)
    async def list_service_accounts(project_id: ProjectId, after: After = None, limit: Limit = 20) -> dict[str, Any]:
        return await plane.service_accounts(project_id, after, limit)

    @router.get("/projects/{project_id}/service_accounts/{service_account_id}", responses=missing)
    async def retrieve_service_account(project_id: ProjectId, service_account_id: AccountId) -> dict[str, Any]:
        return await plane.service_account(project_id, service_account_id)

    @router.delete("/projects/{project_id}/service_accounts/{service_account_id}", responses=missing)
    async def delete_service_account(
        project_id: ProjectId, service_account_id: AccountId, by: AdminDep
    ) -> dict[str, Any]:
        """Delete the service account and its keys."""
        return await plane.delete_service_account(by, project_id, service_account_id)

    @router.post("/projects/{project_id}/service_accounts/{service_account_id}/api_keys", responses=missing)
    async def create_service_account_api_key(
        project_id: ProjectId, service_account_id: AccountId, body: types.CreateKey, by: AdminDep
    ) -> dict[str, Any]:
        """Another API key of the service account (its value in this answer, and never again)."""
        return await plane.create_key(by, project_id, service_account_id, body)

    @router.get("/projects/{project_id}/api_keys", responses=missing)
    async def list_project_api_keys(
        project_id: ProjectId,
        after: After = None,
        limit: Limit = 20,
        owner_project_access: Literal["active", "inactive", "any"] | None = None,
    ) -> dict[str, Any]:
        return await plane.keys(project_id, after, limit, owner_project_access)

    @router.get("/projects/{project_id}/api_keys/{api_key_id}", responses=missing)
    async def retrieve_project_api_key(project_id: ProjectId, api_key_id: KeyId) -> dict[str, Any]:
        return await plane.key(project_id, api_key_id)

    @router.delete("/projects/{project_id}/api_keys/{api_key_id}", responses=missing)
    async def delete_project_api_key(project_id: ProjectId, api_key_id: KeyId, by: AdminDep) -> dict[str, Any]:
        """Delete the key: refused (401) on every API process within a second."""
        return await plane.delete_key(by, project_id, api_key_id)

    @router.get("/projects/{project_id}/model_permissions", responses=missing)
    async def retrieve_project_model_permissions(project_id: ProjectId) -> dict[str, Any]:
        """The models the project may use: `model_ids` only (allow_list), or all but them (deny_list)."""
        return await plane.model_permissions(project_id)

    @router.post("/projects/{project_id}/model_permissions", responses=missing)
    async def update_project_model_permissions(
        project_id: ProjectId, body: types.UpdateModelPermissions, by: AdminDep
    ) -> dict[str, Any]:
        """Set the models the project may use (each a model of the registry, by name or
        alias): in force on every API process within a second; any other answers as a
        model the registry does not list."""
        return await plane.update_model_permissions(by, project_id, body)

    @router.delete("/projects/{project_id}/model_permissions", responses=missing)
    async def delete_project_model_permissions(project_id: ProjectId, by: AdminDep) -> dict[str, Any]:
        """Remove the project's model permissions: it may use every model again."""
        return await plane.delete_model_permissions(by, project_id)

    @router.get("/projects/{project_id}/rate_limits", responses=missing)
    async def list_project_rate_limits(
        project_id: ProjectId,
        after: RateLimitCursor = None,
        before: RateLimitCursor = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 100,
    ) -> dict[str, Any]:
        """The project's rate limits, one per model of the registry (``rl-<model>``): 0
        requests or tokens per minute, or null for the others, where none is set."""
        return await plane.rate_limits(project_id, after, before, limit)

    @router.post("/projects/{project_id}/rate_limits/{rate_limit_id:path}", responses=missing)
    async def update_project_rate_limit(
        project_id: ProjectId, rate_limit_id: RateLimitId, body: types.UpdateRateLimit, by: AdminDep
    ) -> dict[str, Any]:
        """Set the project's limits on a model (0 clears one): held on every API process
        within a second; past one, its requests get 429 ``rate_limit_exceeded``."""
        return await plane.update_rate_limit(by, project_id, rate_limit_id, body)

    @router.get("/audit_logs")
    async def list_audit_logs(
        request: Request,
        event_types: Annotated[list[EventType], Query(alias="event_types[]", max_length=100)] = [],  # noqa: B006
        project_ids: Annotated[list[Id], Query(alias="project_ids[]", max_length=100)] = [],  # noqa: B006
        resource_ids: Annotated[list[Id], Query(alias="resource_ids[]", max_length=100)] = [],  # noqa: B006
        actor_ids: Annotated[list[Id], Query(alias="actor_ids[]", max_length=100)] = [],  # noqa: B006
        actor_emails: Annotated[list[Email], Query(alias="actor_emails[]", max_length=100)] = [],  # noqa: B006
        # The same lists written plainly (name=a&name=b), as curl users and the usage
        # endpoints write them: dropped, they would show every project's events.
        event_types_plain: Annotated[list[EventType], Query(alias="event_types", max_length=100)] = [],  # noqa: B006
        project_ids_plain: Annotated[list[Id], Query(alias="project_ids", max_length=100)] = [],  # noqa: B006
        resource_ids_plain: Annotated[list[Id], Query(alias="resource_ids", max_length=100)] = [],  # noqa: B006
        actor_ids_plain: Annotated[list[Id], Query(alias="actor_ids", max_length=100)] = [],  # noqa: B006
        actor_emails_plain: Annotated[list[Email], Query(alias="actor_emails", max_length=100)] = [],  # noqa: B006
        tenant_only: bool = False,
        gt: Annotated[Seconds | None, Query(alias="effective_at[gt]")] = None,
        gte: Annotated[Seconds | None, Query(alias="effective_at[gte]")] = None,
        lt: Annotated[Seconds | None, Query(alias="effective_at[lt]")] = None,
        lte: Annotated[Seconds | None, Query(alias="effective_at[lte]")] = None,
        effective_at: Annotated[str | None, Query(include_in_schema=False)] = None,
        after: After = None,
        before: After = None,
        limit: Limit = 20,
    ) -> dict[str, Any]:
        """Admin actions, newest first: who (the admin key), what, when, on which object.
        Never a key's value."""
        refuse_indexed(request.query_params, AUDIT_LISTS, AUDIT_SINGLES)
        if effective_at is not None:
            # A range has no one value: refused, not read as no bound at all.
            raise RequestValidationError([{
                "loc": ("query", "effective_at"), "type": "value_error",
                "msg": "a range: give its bounds as effective_at[gt], [gte], [lt] or [lte], Unix seconds",
            }])  # fmt: skip
        bounds = {
            name: value for name, value in (("gt", gt), ("gte", gte), ("lt", lt), ("lte", lte)) if value is not None
        }
        chosen = AuditFilter(
            event_types + event_types_plain,
            project_ids + project_ids_plain,
            resource_ids + resource_ids_plain,
            actor_ids + actor_ids_plain,
            actor_emails + actor_emails_plain,
            tenant_only,
            bounds,
        )
        return await plane.audit_logs(chosen, limit, after, before)

    return router
