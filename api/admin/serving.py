"""The control plane behind ``/v1/organization/*``: each call a transaction of the store
(shared/control/store.py), run on a thread; each change held by this process before it
answers, and announced to the others (api/tenancy/control_sync.py).

The keys file's tenants (and ``default``) appear as projects, read-only: their id is
their name, and they are changed in the file, not here (400 naming it). They have no
service accounts or keys to list here: their keys are the file's.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError

from api.admin import types
from api.errors import BadRequest, Conflict, ControlPlaneUnavailable, NotFound, ReadOnly
from api.tenancy.control_sync import ControlSync
from api.tenancy.spend import MonthSpend
from shared.config import Config
from shared.contract.keys import NANO_PER_CENT
from shared.control.models import NAME_MAX
from shared.control.store import RATE_LIMIT_PREFIX, Actor, Archived, AuditFilter, ControlStore, Missing, rate_limit_id
from shared.registry import Registry, UnknownModel
from shared.tenants import AdminGrant, Tenants

log = logging.getLogger(__name__)

T = TypeVar("T")


class ControlPlane:
    """What the admin endpoints do, for one API process."""

    def __init__(
        self,
        config: Config,
        store: ControlStore,
        sync: ControlSync,
        tenants: Tenants,
        registry: Registry,
        spend: MonthSpend,
    ) -> None:
        """`registry`: the models a project's rate limits are set on and its model permissions
        name; `spend`: what projects with a spend limit spent this month (a limit set makes
        its project's count first)."""
        self._config = config
        self._models = [model.name for model in registry.models]
        self._store = store
        self._sync = sync
        self._spend = spend
        self._declared = tenants.named  # the keys file's tenants: fixed while the process runs
        self._declared_at = _modified(config.api_keys_file)
        self._registry = registry  # what model permissions name

    async def _call(self, work: Callable[..., T], *args: Any) -> T:
        try:
            return await self._sync.call(work, *args)  # the control plane's threads, its time bound
        except Missing as exc:
            raise NotFound(str(exc)) from None
        except Archived as exc:
            raise Conflict(f"{exc}: nothing more is made in it") from None
        except SQLAlchemyError as exc:
            log.warning("control plane database: %s", exc)
            raise ControlPlaneUnavailable(
                "control plane database unavailable; keys that worked go on working"
            ) from None

    async def _change(self, work: Callable[..., T], *args: Any) -> T:
        done = await self._call(work, *args)
        await self._sync.changed()
        return done

    def _read_only(self, project_id: str) -> None:
        if project_id in self._declared:
            raise ReadOnly(
                f"project {project_id!r} is a tenant of the keys file (API_KEYS_FILE, API_KEYS): it is changed there"
            )

    # Admin API keys.

    async def create_admin_key(self, by: AdminGrant, body: types.CreateAdminKey) -> dict[str, Any]:
        key, value = await self._change(self._store.create_admin_key, _actor(by), body.name, body.expires_in_seconds)
        return types.admin_key(key, value)

    async def admin_keys(self, after: str | None, limit: int, order: str) -> dict[str, Any]:
        page = await self._call(self._store.admin_keys, after, limit, order == "desc")
        return types.listing([types.admin_key(key) for key in page.items], page.has_more)

    async def admin_key(self, key_id: str) -> dict[str, Any]:
        return types.admin_key(await self._call(self._store.admin_key, key_id))

    async def delete_admin_key(self, by: AdminGrant, key_id: str) -> dict[str, Any]:
        key = await self._change(self._store.delete_admin_key, _actor(by), key_id)
        return types.deleted("organization.admin_api_key", key.id)

    # Projects.

    async def create_project(self, by: AdminGrant, body: types.CreateProject) -> dict[str, Any]:
        return types.project(await self._change(self._store.create_project, _actor(by), body.name))

    async def projects(self, after: str | None, limit: int, include_archived: bool) -> dict[str, Any]:
        """The keys file's projects first, then those made here, in the order they were made."""
        declared = [types.declared_project(tenant, self._declared_at) for tenant in self._declared.values()]
        names = [found["id"] for found in declared]
        if after is not None and after not in names:
            page = await self._call(self._store.projects, after, limit, include_archived)
            return types.listing([types.project(found) for found in page.items], page.has_more)
        start = names.index(after) + 1 if after is not None else 0
        head = declared[start : start + limit]
        page = await self._call(self._store.projects, None, limit - len(head), include_archived)
        found = head + [types.project(found) for found in page.items]
        return types.listing(found, start + limit < len(declared) or page.has_more)

    async def project(self, project_id: str) -> dict[str, Any]:
        if project_id in self._declared:
            return types.declared_project(self._declared[project_id], self._declared_at)
        return types.project(await self._call(self._store.project, project_id))

    async def update_project(self, by: AdminGrant, project_id: str, body: types.UpdateProject) -> dict[str, Any]:
        self._read_only(project_id)
        if body.name is None:
            return await self.project(project_id)
        return types.project(await self._change(self._store.rename_project, _actor(by), project_id, body.name))

    async def archive_project(self, by: AdminGrant, project_id: str) -> dict[str, Any]:
        self._read_only(project_id)
        return types.project(await self._change(self._store.archive_project, _actor(by), project_id))

    # Spend limits.

    async def spend_limit(self, project_id: str) -> dict[str, Any]:
        if project_id in self._declared:
            raise NotFound(f"project {project_id!r} (a tenant of the keys file) has no spend limit")
        limit = await self._call(self._store.spend_limit, project_id)
        return types.spend_limit(limit, await self._enforcing(project_id, limit.threshold_amount))

    async def update_spend_limit(self, by: AdminGrant, project_id: str, body: types.UpdateSpendLimit) -> dict[str, Any]:
        """Set the limit, its project's count of this month made first (from the usage
        history, unless Redis holds one): no process counts the month from 0."""
        self._read_only(project_id)
        await self._call(self._store.project, project_id)
        try:
            await self._spend.start_counting(project_id)
        except SQLAlchemyError as exc:
            log.warning("control plane database: %s", exc)
            raise ControlPlaneUnavailable("control plane database unavailable") from None
        limit = await self._change(
            self._store.set_spend_limit, _actor(by), project_id, body.threshold_amount, body.currency, body.interval
        )
        return types.spend_limit(limit, await self._enforcing(project_id, limit.threshold_amount))

    async def delete_spend_limit(self, by: AdminGrant, project_id: str) -> dict[str, Any]:
        self._read_only(project_id)
        await self._change(self._store.delete_spend_limit, _actor(by), project_id)
        return {"object": "project.spend_limit.deleted", "deleted": True}

    async def _enforcing(self, project_id: str, cents: int) -> bool:
        """Whether the project's spend this month reached `cents` (its requests refused)."""
        try:
            spent = await self._spend.spent_now(project_id)
        except SQLAlchemyError:  # Redis and the database both away: said as not enforcing
            return False
        return spent >= cents * NANO_PER_CENT

    # Service accounts and their keys.

    async def create_service_account(
        self, by: AdminGrant, project_id: str, body: types.CreateServiceAccount
    ) -> dict[str, Any]:
        self._read_only(project_id)
        made = await self._change(
            self._store.create_service_account, _actor(by), project_id, body.name,
            not body.create_service_account_only, body.expires_in_seconds,
        )  # fmt: skip
        answer = types.service_account(made.account)
        key = made.key
        answer["api_key"] = types.new_key(key, made.value) if key is not None and made.value is not None else None
        return answer

    async def create_key(
        self, by: AdminGrant, project_id: str, account_id: str, body: types.CreateKey
    ) -> dict[str, Any]:
        self._read_only(project_id)
        key, value = await self._change(
            self._store.create_key, _actor(by), project_id, account_id, body.name, body.expires_in_seconds
        )
        return types.new_key(key, value)

    async def service_accounts(self, project_id: str, after: str | None, limit: int) -> dict[str, Any]:
        if project_id in self._declared:
            return types.listing([], False)
        page = await self._call(self._store.service_accounts, project_id, after, limit)
        return types.listing([types.service_account(account) for account in page.items], page.has_more)

    async def service_account(self, project_id: str, account_id: str) -> dict[str, Any]:
        return types.service_account(await self._call(self._store.service_account, project_id, account_id))

    async def delete_service_account(self, by: AdminGrant, project_id: str, account_id: str) -> dict[str, Any]:
        self._read_only(project_id)
        account = await self._change(self._store.delete_service_account, _actor(by), project_id, account_id)
        return types.deleted("organization.project.service_account", account.id)

    async def keys(self, project_id: str, after: str | None, limit: int, access: str | None) -> dict[str, Any]:
        if project_id in self._declared:
            return types.listing([], False)
        project, page, owners = await self._call(self._store.keys, project_id, after, limit)
        active = project.archived_at is None
        if access in ("active", "inactive") and (access == "active") != active:
            return types.listing([], False)
        found = [types.project_key(key, owners[key.service_account_id], active) for key in page.items]
        return types.listing(found, page.has_more)

    async def key(self, project_id: str, key_id: str) -> dict[str, Any]:
        project, key, owner = await self._call(self._store.key, project_id, key_id)
        return types.project_key(key, owner, project.archived_at is None)

    async def delete_key(self, by: AdminGrant, project_id: str, key_id: str) -> dict[str, Any]:
        self._read_only(project_id)
        key = await self._change(self._store.delete_key, _actor(by), project_id, key_id)
        return types.deleted("organization.project.api_key", key.id)

    # Model permissions.

    async def model_permissions(self, project_id: str) -> dict[str, Any]:
        """The project's model permissions; a keys file's tenant, or a project without
        any, may use every model (a deny_list naming none)."""
        if project_id in self._declared:
            return types.model_permissions(None)
        return types.model_permissions(await self._call(self._store.model_permissions, project_id))

    async def update_model_permissions(
        self, by: AdminGrant, project_id: str, body: types.UpdateModelPermissions
    ) -> dict[str, Any]:
        self._read_only(project_id)
        for index, name in enumerate(body.model_ids):
            try:
                self._registry.route(name)
            except UnknownModel as exc:
                raise BadRequest(f"model_ids[{index}]: {exc}") from None
        found = await self._change(self._store.set_model_permissions, _actor(by), project_id, body.mode, body.model_ids)
        return types.model_permissions(found)

    async def delete_model_permissions(self, by: AdminGrant, project_id: str) -> dict[str, Any]:
        self._read_only(project_id)
        deleted = await self._change(self._store.delete_model_permissions, _actor(by), project_id)
        return types.model_permissions_deleted(deleted)

    # Rate limits per model: one of each model of the registry, by its name (``rl-<model>``).

    async def rate_limits(self, project_id: str, after: str | None, before: str | None, limit: int) -> dict[str, Any]:
        """A page of the project's rate limits, in the registry's order of its models: those
        after `after`, or the `limit` before `before`; a cursor naming no model gives nothing."""
        if project_id in self._declared:
            tenant = self._declared[project_id]
            found = [types.declared_rate_limit(rate_limit_id(model), model, tenant) for model in self._models]
        else:
            rows = {row.model: row for row in await self._call(self._store.rate_limits, project_id)}
            found = [types.rate_limit(rate_limit_id(model), model, rows.get(model)) for model in self._models]
        ids = [each["id"] for each in found]
        for cursor in (after, before):
            if cursor is not None and cursor not in ids:
                return types.listing([], False)
        if before is not None:
            end = ids.index(before)
            start = max(0, end - limit)
            return types.listing(found[start:end], start > 0)
        start = ids.index(after) + 1 if after is not None else 0
        return types.listing(found[start : start + limit], start + limit < len(found))

    async def update_rate_limit(
        self, by: AdminGrant, project_id: str, limit_id: str, body: types.UpdateRateLimit
    ) -> dict[str, Any]:
        """Set the project's limits on the model of `limit_id`: held by this process before
        the answer, by every other within a second."""
        if "\ufffd" in limit_id:  # how the path's bytes that are not UTF-8 (a lone surrogate's) are read
            raise BadRequest("rate_limit_id: holds bytes that are not UTF-8 text")
        self._read_only(project_id)
        model = limit_id.removeprefix(RATE_LIMIT_PREFIX)
        if not limit_id.startswith(RATE_LIMIT_PREFIX) or model not in self._models:
            raise NotFound(f"no rate limit with id {limit_id!r}: each model of the registry has one, rl-<model>")
        if len(model) > NAME_MAX:
            raise BadRequest(f"rate_limit_id: model {model[:40]!r}... is named in over {NAME_MAX} characters")
        changes = body.changes()
        if not changes:
            rows = {row.model: row for row in await self._call(self._store.rate_limits, project_id)}
            return types.rate_limit(limit_id, model, rows.get(model))
        found = await self._change(self._store.update_rate_limit, _actor(by), project_id, model, changes)
        return types.rate_limit(limit_id, model, found)

    # The audit log.

    async def audit_logs(
        self, chosen: AuditFilter, limit: int, after: str | None, before: str | None
    ) -> dict[str, Any]:
        page = await self._call(self._store.audit_events, chosen, limit, after, before)
        return types.listing([types.audit_event(event) for event in page.items], page.has_more)


def _actor(grant: AdminGrant) -> Actor:
    return Actor(grant.key_id, grant.name)


def _modified(path: str) -> int:
    """When the keys file was last written: its projects' `created_at` (0 without one)."""
    try:
        return int(os.stat(path).st_mtime) if path else 0
    except OSError:
        return 0
