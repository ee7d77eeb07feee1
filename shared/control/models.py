"""The control plane's tables (SQLAlchemy 2). Times are Unix seconds, as the Administration
API answers them. Nothing is deleted: a deleted key or service account keeps its row with
`deleted_at`, so the audit log (and later, usage by key) still names what it refers to.

Each table has `seq`, an integer in the order rows were made: lists are paged on it (an
id is random), and `control_state.version` grows with every change, which is how each
API process knows that what it holds in memory is stale (shared/control/store.py).

The migrations (shared/control/migrations/) create exactly these tables: a test compares
the two.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, LargeBinary, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAME_MAX = 256  # characters of a name (a project's, a service account's, a key's)

# Constraint names that are the same on every database, so a migration can name them.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class ControlState(Base):
    """One row: the version of the control plane, one more with each change."""

    __tablename__ = "control_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)


class Project(Base):
    """A project: a tenant of the gateway, named by its id on jobs, logs and metrics."""

    __tablename__ = "projects"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(NAME_MAX))
    created_at: Mapped[int] = mapped_column(BigInteger)
    archived_at: Mapped[int | None] = mapped_column(BigInteger)

    @property
    def status(self) -> str:
        return "active" if self.archived_at is None else "archived"


class ServiceAccount(Base):
    """A project's service account: what its API keys belong to."""

    __tablename__ = "service_accounts"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    project_id: Mapped[str] = mapped_column(String(64), ForeignKey("projects.id"), index=True)
    name: Mapped[str] = mapped_column(String(NAME_MAX))
    role: Mapped[str] = mapped_column(String(16))  # member, or none (made without a key)
    created_at: Mapped[int] = mapped_column(BigInteger)
    deleted_at: Mapped[int | None] = mapped_column(BigInteger)


class ProjectKey(Base):
    """A project's API key: its SHA-256 digest and redacted form, never its value."""

    __tablename__ = "project_api_keys"
    __table_args__ = (Index("ix_project_api_keys_project_id_seq", "project_id", "seq"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    project_id: Mapped[str] = mapped_column(String(64), ForeignKey("projects.id"))
    service_account_id: Mapped[str] = mapped_column(String(64), ForeignKey("service_accounts.id"), index=True)
    name: Mapped[str] = mapped_column(String(NAME_MAX))
    digest: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    redacted_value: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int | None] = mapped_column(BigInteger)
    deleted_at: Mapped[int | None] = mapped_column(BigInteger)


class AdminKey(Base):
    """An admin API key made at runtime (those of ADMIN_API_KEYS are configuration's)."""

    __tablename__ = "admin_api_keys"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(NAME_MAX))
    digest: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    redacted_value: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int | None] = mapped_column(BigInteger)
    deleted_at: Mapped[int | None] = mapped_column(BigInteger)
    created_by: Mapped[str] = mapped_column(String(64))  # the admin key that made it


class AuditEvent(Base):
    """One admin action: who (`actor_id`, an admin key's id), what (`type`, `details`),
    when (`effective_at`), on which object (`resource_id`, its `project_id`). `details`
    holds names and ids, never a key's value or digest."""

    __tablename__ = "audit_logs"
    __table_args__ = (Index("ix_audit_logs_effective_at", "effective_at"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    type: Mapped[str] = mapped_column(String(64), index=True)
    effective_at: Mapped[int] = mapped_column(BigInteger)
    actor_id: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[str | None] = mapped_column(String(64), index=True)
    project_name: Mapped[str | None] = mapped_column(String(NAME_MAX))
    resource_id: Mapped[str] = mapped_column(String(64), index=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
