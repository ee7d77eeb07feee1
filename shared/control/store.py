"""Every read and change of the control plane, each in one transaction.

A change (`ControlStore._change`) first adds one to ``control_state.version`` (on
PostgreSQL that row's lock orders concurrent changes; on SQLite ``BEGIN IMMEDIATE``
does), then does its work and writes its audit event, so a change, its audit event and
its new version are committed together or not at all. What API processes hold in
memory is read whole by `directory`, with the version it was read at.

Calls block (SQLAlchemy's synchronous engine): the API runs them on a thread
(api/admin/serving.py, api/tenancy/control_sync.py), never on its event loop.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy import Engine, Select, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from shared.control import ids
from shared.control.models import (
    AdminKey,
    AuditEvent,
    ControlState,
    ModelPermissions,
    Project,
    ProjectKey,
    RateLimit,
    ServiceAccount,
    SpendLimit,
    UsageBucket,
)
from shared.model_access import ModelAccess
from shared.tenants import AdminGrant, Directory, Grant, ModelLimits, Quotas, Tenant

T = TypeVar("T")


class Missing(LookupError):
    """No such object: never made, deleted, or not the named project's."""

    def __init__(self, kind: str, object_id: str) -> None:
        super().__init__(f"no {kind} with id {object_id!r}")
        self.kind = kind
        self.object_id = object_id


class Archived(Exception):
    """The project is archived: nothing more is made in it."""

    def __init__(self, project_id: str) -> None:
        super().__init__(f"project {project_id!r} is archived")
        self.project_id = project_id


@dataclass(frozen=True)
class Actor:
    """Who asks: an admin API key, by its id and name."""

    id: str
    name: str


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list, and whether more follow it."""

    items: list[T]
    has_more: bool


@dataclass(frozen=True)
class AuditFilter:
    """Which audit events a list holds (every one given must match; empty: any)."""

    event_types: Sequence[str] = ()
    project_ids: Sequence[str] = ()
    resource_ids: Sequence[str] = ()
    actor_ids: Sequence[str] = ()
    actor_emails: Sequence[str] = ()  # the gateway's actors are keys, with no e-mail: none matches
    tenant_only: bool = False  # the organization's own events (tenant.*)
    effective: dict[str, int] = field(default_factory=dict)  # gt, gte, lt, lte: Unix seconds


@dataclass(frozen=True)
class NewServiceAccount:
    """A service account just made, with its first key (and the key's value, shown once)."""

    account: ServiceAccount
    key: ProjectKey | None
    value: str | None


class ControlStore:
    """The control plane's database, as the API uses it."""

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._clock = clock

    def _now(self) -> int:
        return int(self._clock())

    @contextmanager
    def _change(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            session.execute(update(ControlState).where(ControlState.id == 1).values(version=ControlState.version + 1))
            yield session

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    def _audit(
        self,
        session: Session,
        actor: Actor,
        kind: str,
        resource_id: str,
        details: dict[str, Any],
        project: Project | None = None,
    ) -> None:
        session.add(
            AuditEvent(
                id=ids.new_id(ids.AUDIT_LOG),
                type=kind,
                effective_at=self._now(),
                actor_id=actor.id,
                project_id=project.id if project else None,
                project_name=project.name if project else None,
                resource_id=resource_id,
                details={"id": resource_id, **details},
            )
        )

    # What API processes hold in memory.

    def version(self) -> int:
        """The control plane's version: one more with each change."""
        with self._read() as session:
            return session.execute(select(ControlState.version)).scalar_one()

    def directory(self, max_priority: int) -> Directory:
        """Every project (as a tenant: weight 1, no quota but `max_priority`, its rate limits
        per model, its model permissions), the keys of the active ones and the admin keys,
        neither deleted nor expired: read in one snapshot, with its version."""
        now = self._now()
        with self._sessions() as session, session.begin():
            if self.engine.dialect.name == "postgresql":  # every SELECT below sees the same snapshot
                session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            version = session.execute(select(ControlState.version)).scalar_one()
            quotas = Quotas(max_priority=max_priority)
            limits, access = _model_limits(session), _model_access(session)
            spend = {limit.project_id: limit.threshold_amount for limit in session.scalars(select(SpendLimit))}
            every = list(session.scalars(select(Project)))
            projects = {
                p.id: Tenant(
                    p.id,
                    quotas=quotas,
                    model_limits=limits.get(p.id, {}),
                    models=access.get(p.id),
                    spend_limit=spend.get(p.id),
                )
                for p in every
            }
            archived = frozenset(p.id for p in every if p.archived_at is not None)
            live = select(ProjectKey).join(Project, Project.id == ProjectKey.project_id)
            live = live.where(ProjectKey.deleted_at.is_(None), Project.archived_at.is_(None))
            keys = {
                key.digest: Grant(projects[key.project_id], key.id, key.expires_at)
                for key in session.scalars(live)
                if key.expires_at is None or key.expires_at > now
            }
            admins = {
                key.digest: AdminGrant(key.id, key.name, key.expires_at)
                for key in session.scalars(select(AdminKey).where(AdminKey.deleted_at.is_(None)))
                if key.expires_at is None or key.expires_at > now
            }
        return Directory(version, projects, keys, admins, archived)

    # Admin API keys.

    def create_admin_key(self, actor: Actor, name: str, expires_in: int | None) -> tuple[AdminKey, str]:
        """A new admin key, and its value (shown once)."""
        made = ids.new_key(ids.ADMIN_KEY)
        now = self._now()
        key = AdminKey(
            id=ids.new_id(ids.KEY), name=name, digest=made.digest, redacted_value=made.redacted, created_at=now,
            expires_at=now + expires_in if expires_in is not None else None, created_by=actor.id,
        )  # fmt: skip
        with self._change() as session:
            session.add(key)
            self._audit(session, actor, "tenant.admin_api_key.created", key.id, {"data": {"name": name}})
        return key, made.value

    def admin_keys(self, after: str | None, limit: int, newest_first: bool) -> Page[AdminKey]:
        with self._read() as session:
            query = select(AdminKey).where(AdminKey.deleted_at.is_(None))
            return _page(session, query, AdminKey, after, limit, newest_first)

    def admin_key(self, key_id: str) -> AdminKey:
        with self._read() as session:
            return _admin_key(session, key_id)

    def delete_admin_key(self, actor: Actor, key_id: str) -> AdminKey:
        with self._change() as session:
            key = _admin_key(session, key_id)
            key.deleted_at = self._now()
            self._audit(session, actor, "tenant.admin_api_key.deleted", key.id, {})
        return key

    # Projects.

    def create_project(self, actor: Actor, name: str) -> Project:
        project = Project(id=ids.new_id(ids.PROJECT), name=name, created_at=self._now())
        with self._change() as session:
            session.add(project)
            self._audit(session, actor, "project.created", project.id, {"data": {"name": name, "title": name}}, project)
        return project

    def projects(self, after: str | None, limit: int, include_archived: bool) -> Page[Project]:
        with self._read() as session:
            query = select(Project)
            if not include_archived:
                query = query.where(Project.archived_at.is_(None))
            return _page(session, query, Project, after, limit)

    def project(self, project_id: str) -> Project:
        with self._read() as session:
            return _project(session, project_id)

    def rename_project(self, actor: Actor, project_id: str, name: str) -> Project:
        with self._change() as session:
            project = _project(session, project_id)
            project.name = name
            self._audit(session, actor, "project.updated", project.id, {"changes_requested": {"title": name}}, project)
        return project

    def archive_project(self, actor: Actor, project_id: str) -> Project:
        """Archive the project (its keys stop working); one archived already is left as it is."""
        with self._change() as session:
            project = _project(session, project_id)
            if project.archived_at is None:
                project.archived_at = self._now()
                self._audit(session, actor, "project.archived", project.id, {}, project)
        return project

    # Spend limits.

    def spend_limit(self, project_id: str) -> SpendLimit:
        """The project's hard spend limit (Missing: the project has none, or is not there)."""
        with self._read() as session:
            _project(session, project_id)
            return _spend_limit(session, project_id)

    def set_spend_limit(
        self, actor: Actor, project_id: str, threshold_amount: int, currency: str, interval: str
    ) -> SpendLimit:
        """Make or replace the project's hard spend limit (`threshold_amount` cents of
        `currency` each `interval`); an archived project's too (its jobs may still run)."""
        with self._change() as session:
            project = _project(session, project_id)
            limit = session.scalars(select(SpendLimit).where(SpendLimit.project_id == project_id)).one_or_none()
            if limit is None:
                limit = SpendLimit(project_id=project_id)
                session.add(limit)
            limit.threshold_amount, limit.currency, limit.interval = threshold_amount, currency, interval
            limit.updated_at = self._now()
            asked = {"threshold_amount": threshold_amount, "currency": currency, "interval": interval}
            # OpenAI's audit log has no type of its own for it: a change of the project.
            self._audit(
                session, actor, "project.updated", project.id, {"changes_requested": {"spend_limit": asked}}, project
            )
        return limit

    def delete_spend_limit(self, actor: Actor, project_id: str) -> SpendLimit:
        """Remove the project's hard spend limit (Missing when it has none): the limit removed."""
        with self._change() as session:
            project = _project(session, project_id)
            limit = _spend_limit(session, project_id)
            session.delete(limit)
            self._audit(
                session, actor, "project.updated", project.id, {"changes_requested": {"spend_limit": None}}, project
            )
        return limit

    def month_costs(self, start: int, end: int, project_ids: Sequence[str]) -> dict[str, int]:
        """What each of `project_ids` spent from `start` to `end` (Unix seconds: a UTC
        month) as the usage history holds it, in nano-USD. Buckets of each width cover the
        same usage: the width whose sum is the largest (the one written furthest) is taken,
        so a width whose buckets are rolled up later, or kept less long, counts nothing twice."""
        if not project_ids:
            return {}
        query = (
            select(UsageBucket.project_id, UsageBucket.width, func.sum(UsageBucket.cost))
            .where(
                UsageBucket.start_time >= start,
                UsageBucket.start_time < end,
                UsageBucket.project_id.in_(list(project_ids)),
            )
            .group_by(UsageBucket.project_id, UsageBucket.width)
        )
        found: dict[str, int] = {}
        with self._read() as session:
            for project_id, _width, cost in session.execute(query):
                found[project_id] = max(found.get(project_id, 0), int(cost or 0))
        return found

    # Service accounts and their keys.

    def create_service_account(
        self, actor: Actor, project_id: str, name: str, with_key: bool, expires_in: int | None
    ) -> NewServiceAccount:
        """A service account of an active project, with a key unless `with_key` is false."""
        now = self._now()
        account = ServiceAccount(
            id=ids.new_id(ids.SERVICE_ACCOUNT), project_id=project_id, name=name,
            role="member" if with_key else "none", created_at=now,
        )  # fmt: skip
        with self._change() as session:
            project = _active_project(session, project_id)
            session.add(account)
            self._audit(
                session, actor, "service_account.created", account.id, {"data": {"role": account.role}}, project
            )
            if not with_key:
                return NewServiceAccount(account, None, None)
            session.flush()
            key, value = self._add_key(session, actor, project, account, name, expires_in)
        return NewServiceAccount(account, key, value)

    def create_key(
        self, actor: Actor, project_id: str, account_id: str, name: str | None, expires_in: int | None
    ) -> tuple[ProjectKey, str]:
        """Another key of a service account, and its value (shown once)."""
        with self._change() as session:
            project = _active_project(session, project_id)
            account = _service_account(session, project_id, account_id)
            return self._add_key(session, actor, project, account, name or account.name, expires_in)

    def _add_key(
        self,
        session: Session,
        actor: Actor,
        project: Project,
        account: ServiceAccount,
        name: str,
        expires_in: int | None,
    ) -> tuple[ProjectKey, str]:
        made = ids.new_key(ids.PROJECT_KEY)
        now = self._now()
        key = ProjectKey(
            id=ids.new_id(ids.KEY), project_id=project.id, service_account_id=account.id, name=name,
            digest=made.digest, redacted_value=made.redacted, created_at=now,
            expires_at=now + expires_in if expires_in is not None else None,
        )  # fmt: skip
        session.add(key)
        self._audit(session, actor, "api_key.created", key.id, {"data": {"scopes": []}}, project)
        return key, made.value

    def service_accounts(self, project_id: str, after: str | None, limit: int) -> Page[ServiceAccount]:
        with self._read() as session:
            _project(session, project_id)
            query = select(ServiceAccount).where(
                ServiceAccount.project_id == project_id, ServiceAccount.deleted_at.is_(None)
            )
            return _page(session, query, ServiceAccount, after, limit)

    def service_account(self, project_id: str, account_id: str) -> ServiceAccount:
        with self._read() as session:
            return _service_account(session, project_id, account_id)

    def delete_service_account(self, actor: Actor, project_id: str, account_id: str) -> ServiceAccount:
        """Delete the service account and every key of it."""
        now = self._now()
        with self._change() as session:
            project = _project(session, project_id)
            account = _service_account(session, project_id, account_id)
            account.deleted_at = now
            keys = select(ProjectKey).where(
                ProjectKey.service_account_id == account.id, ProjectKey.deleted_at.is_(None)
            )
            for key in session.scalars(keys):
                key.deleted_at = now
                self._audit(session, actor, "api_key.deleted", key.id, {}, project)
            self._audit(session, actor, "service_account.deleted", account.id, {}, project)
        return account

    def keys(
        self, project_id: str, after: str | None, limit: int
    ) -> tuple[Project, Page[ProjectKey], dict[str, ServiceAccount]]:
        """A page of the project's keys, the project, and the keys' service accounts by id."""
        with self._read() as session:
            project = _project(session, project_id)
            query = select(ProjectKey).where(ProjectKey.project_id == project_id, ProjectKey.deleted_at.is_(None))
            page = _page(session, query, ProjectKey, after, limit)
            owners = {key.service_account_id for key in page.items}
            accounts = session.scalars(select(ServiceAccount).where(ServiceAccount.id.in_(owners))) if owners else []
            return project, page, {account.id: account for account in accounts}

    def key(self, project_id: str, key_id: str) -> tuple[Project, ProjectKey, ServiceAccount]:
        with self._read() as session:
            project = _project(session, project_id)
            key = _key(session, project_id, key_id)
            return (
                project,
                key,
                session.scalars(select(ServiceAccount).where(ServiceAccount.id == key.service_account_id)).one(),
            )

    def delete_key(self, actor: Actor, project_id: str, key_id: str) -> ProjectKey:
        with self._change() as session:
            project = _project(session, project_id)
            key = _key(session, project_id, key_id)
            key.deleted_at = self._now()
            self._audit(session, actor, "api_key.deleted", key.id, {}, project)
        return key

    # Model permissions.

    def model_permissions(self, project_id: str) -> ModelPermissions | None:
        """The project's model permissions (None: it may use every model)."""
        with self._read() as session:
            _project(session, project_id)
            return _permissions(session, project_id)

    def set_model_permissions(self, actor: Actor, project_id: str, mode: str, model_ids: list[str]) -> ModelPermissions:
        """Replace the project's model permissions (its models checked by the caller)."""
        with self._change() as session:
            project = _project(session, project_id)
            found = _permissions(session, project_id)
            if found is None:
                found = ModelPermissions(project_id=project_id)
                session.add(found)
            found.mode, found.model_ids, found.updated_at = mode, list(model_ids), self._now()
            # OpenAI's audit log has no type of its own for it: a change of the project.
            changes = {"model_permissions": {"mode": mode, "model_ids": list(model_ids)}}
            self._audit(session, actor, "project.updated", project.id, {"changes_requested": changes}, project)
        return found

    def delete_model_permissions(self, actor: Actor, project_id: str) -> bool:
        """Remove the project's model permissions (it may use every model again); whether it had any."""
        with self._change() as session:
            project = _project(session, project_id)
            found = _permissions(session, project_id)
            if found is None:
                return False
            session.delete(found)
            changes = {"model_permissions": None}
            self._audit(session, actor, "project.updated", project.id, {"changes_requested": changes}, project)
        return True

    # Rate limits per model.

    def rate_limits(self, project_id: str) -> list[RateLimit]:
        """The project's rate limits set, one per model (a model without one has no row)."""
        with self._read() as session:
            _project(session, project_id)
            return list(session.scalars(select(RateLimit).where(RateLimit.project_id == project_id)))

    def update_rate_limit(self, actor: Actor, project_id: str, model: str, changes: dict[str, int]) -> RateLimit:
        """Set the limits of `changes` (0: not set) on the project's use of `model`, the
        others as they were; a change with nothing in it changes nothing."""
        with self._change() as session:
            project = _active_project(session, project_id)
            found = session.scalars(
                select(RateLimit).where(RateLimit.project_id == project_id, RateLimit.model == model)
            ).one_or_none()
            if found is None:
                found = RateLimit(project_id=project_id, model=model)
                session.add(found)
            for name, value in changes.items():
                setattr(found, name, value or None)
            found.updated_at = self._now()
            limit_id = rate_limit_id(model)
            details = {"id": limit_id, "changes_requested": changes}
            self._audit(session, actor, "rate_limit.updated", _resource(limit_id), details, project)
        return found

    # The audit log.

    def audit_events(
        self, chosen: AuditFilter, limit: int, after: str | None = None, before: str | None = None
    ) -> Page[AuditEvent]:
        """The events `chosen`, newest first: those older than `after`, or the `limit`
        nearest newer than `before` (a previous page)."""
        query = select(AuditEvent)
        if chosen.actor_emails:
            return Page([], False)
        for column, wanted in (
            (AuditEvent.type, chosen.event_types),
            (AuditEvent.project_id, chosen.project_ids),
            (AuditEvent.resource_id, chosen.resource_ids),
            (AuditEvent.actor_id, chosen.actor_ids),
        ):
            if wanted:
                query = query.where(column.in_(list(wanted)))
        if chosen.tenant_only:
            query = query.where(AuditEvent.type.startswith("tenant."))
        bounds = {"gt": "__gt__", "gte": "__ge__", "lt": "__lt__", "lte": "__le__"}
        for bound, value in chosen.effective.items():
            query = query.where(getattr(AuditEvent.effective_at, bounds[bound])(value))
        with self._read() as session:
            if before is not None:
                page = _page(session, query, AuditEvent, before, limit)
                return Page(list(reversed(page.items)), page.has_more)
            return _page(session, query, AuditEvent, after, limit, newest_first=True)


def _page(
    session: Session, query: Select[Any], model: Any, after: str | None, limit: int, newest_first: bool = False
) -> Page[Any]:
    """The `limit` rows of `query` after the row of id `after`, in the order they were made
    (or the reverse); a cursor that names no row gives nothing, as a page past the end."""
    if after is not None:
        seq = session.scalar(select(model.seq).where(model.id == after))
        if seq is None:
            return Page([], False)
        query = query.where(model.seq < seq if newest_first else model.seq > seq)
    order = model.seq.desc() if newest_first else model.seq.asc()
    rows = list(session.scalars(query.order_by(order).limit(limit + 1)))
    return Page(rows[:limit], len(rows) > limit)


RATE_LIMIT_PREFIX = "rl-"
RESOURCE_MAX = 64  # characters of an audit event's resource_id


def rate_limit_id(model: str) -> str:
    """A rate limit's id, as OpenAI names them: ``rl-`` and its model's name."""
    return f"{RATE_LIMIT_PREFIX}{model}"


def _resource(object_id: str) -> str:
    """`object_id` as an audit event's resource_id: itself, or (a model's name too long for
    the column) ``rl-`` and its SHA-256's first 32 hex digits; the event's details keep it whole."""
    if len(object_id) <= RESOURCE_MAX:
        return object_id
    return RATE_LIMIT_PREFIX + hashlib.sha256(object_id.encode()).hexdigest()[:32]


def _model_limits(session: Session) -> dict[str, dict[str, ModelLimits]]:
    """Every project's rate limits set, by project and model."""
    found: dict[str, dict[str, ModelLimits]] = {}
    for row in session.scalars(select(RateLimit)):
        limits = ModelLimits(
            row.max_requests_per_1_minute or 0, row.max_tokens_per_1_minute or 0, row.max_requests_per_1_day or 0,
            row.batch_1_day_max_input_tokens or 0,
        )  # fmt: skip
        if limits != ModelLimits():
            found.setdefault(row.project_id, {})[row.model] = limits
    return found


def _permissions(session: Session, project_id: str) -> ModelPermissions | None:
    return session.scalars(select(ModelPermissions).where(ModelPermissions.project_id == project_id)).one_or_none()


def _model_access(session: Session) -> dict[str, ModelAccess]:
    """Every project's model permissions, by project id, as the request path checks them."""
    rows = session.scalars(select(ModelPermissions))
    return {row.project_id: ModelAccess(row.mode, frozenset(row.model_ids)) for row in rows}


def _project(session: Session, project_id: str) -> Project:
    project = session.scalars(select(Project).where(Project.id == project_id)).one_or_none()
    if project is None:
        raise Missing("project", project_id)
    return project


def _active_project(session: Session, project_id: str) -> Project:
    project = _project(session, project_id)
    if project.archived_at is not None:
        raise Archived(project_id)
    return project


def _spend_limit(session: Session, project_id: str) -> SpendLimit:
    limit = session.scalars(select(SpendLimit).where(SpendLimit.project_id == project_id)).one_or_none()
    if limit is None:
        raise Missing("spend limit for the project", project_id)
    return limit


def _service_account(session: Session, project_id: str, account_id: str) -> ServiceAccount:
    account = session.scalars(
        select(ServiceAccount).where(
            ServiceAccount.id == account_id,
            ServiceAccount.project_id == project_id,
            ServiceAccount.deleted_at.is_(None),
        )
    ).one_or_none()
    if account is None:
        raise Missing("service account", account_id)
    return account


def _key(session: Session, project_id: str, key_id: str) -> ProjectKey:
    key = session.scalars(
        select(ProjectKey).where(
            ProjectKey.id == key_id, ProjectKey.project_id == project_id, ProjectKey.deleted_at.is_(None)
        )
    ).one_or_none()
    if key is None:
        raise Missing("API key", key_id)
    return key


def _admin_key(session: Session, key_id: str) -> AdminKey:
    key = session.scalars(select(AdminKey).where(AdminKey.id == key_id, AdminKey.deleted_at.is_(None))).one_or_none()
    if key is None:
        raise Missing("admin API key", key_id)
    return key
