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

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    UniqueConstraint,
)
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
    # The start of the last minute it was used in, as usage history has it (written with
    # usage, never per request).
    last_used_at: Mapped[int | None] = mapped_column(BigInteger)


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


class RateLimit(Base):
    """A project's rate limits on one model of the registry (None: that limit is not set)."""

    __tablename__ = "project_rate_limits"
    __table_args__ = (UniqueConstraint("project_id", "model", name="uq_project_rate_limits_project_id_model"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(String(64), ForeignKey("projects.id"))
    model: Mapped[str] = mapped_column(String(NAME_MAX))
    max_requests_per_1_minute: Mapped[int | None] = mapped_column(BigInteger)
    max_tokens_per_1_minute: Mapped[int | None] = mapped_column(BigInteger)
    max_requests_per_1_day: Mapped[int | None] = mapped_column(BigInteger)
    batch_1_day_max_input_tokens: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)


class ModelPermissions(Base):
    """Which models of the registry a project may use: `model_ids` only (allow_list) or
    all but them (deny_list). A project without a row may use every model."""

    __tablename__ = "project_model_permissions"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(String(64), ForeignKey("projects.id"), unique=True)
    mode: Mapped[str] = mapped_column(String(16))  # allow_list | deny_list
    model_ids: Mapped[list[str]] = mapped_column(JSON)
    updated_at: Mapped[int] = mapped_column(BigInteger)


class SpendLimit(Base):
    """A project's hard spend limit: `threshold_amount` cents of `currency` per `interval`."""

    __tablename__ = "project_spend_limits"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(String(64), ForeignKey("projects.id"), unique=True)
    threshold_amount: Mapped[int] = mapped_column(BigInteger)  # cents
    currency: Mapped[str] = mapped_column(String(8))  # USD
    interval: Mapped[str] = mapped_column(String(16))  # month
    updated_at: Mapped[int] = mapped_column(BigInteger)


class UsageBucket(Base):
    """What a project used in one bucket of time (`width` 1m, 1h or 1d from `start_time`,
    Unix seconds) of one model, key and kind: the usage and costs endpoints' rows. The
    project is a tenant's name (a keys file's tenant has no row in `projects`, so no
    foreign key); `api_key_id` is "" for a key that has no id (the keys file's).
    `cost` is in nano-USD (1e-9 USD), at the model's prices when the tokens were counted."""

    __tablename__ = "usage_buckets"
    __table_args__ = (
        UniqueConstraint(
            "width",
            "start_time",
            "project_id",
            "model",
            "api_key_id",
            "batch",
            "kind",
            name="uq_usage_buckets_bucket",
        ),
        Index("ix_usage_buckets_width_start_time", "width", "start_time"),
    )

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    width: Mapped[str] = mapped_column(String(4))  # 1m | 1h | 1d
    start_time: Mapped[int] = mapped_column(BigInteger)
    project_id: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(NAME_MAX))
    api_key_id: Mapped[str] = mapped_column(String(64))
    batch: Mapped[bool] = mapped_column(Boolean)
    kind: Mapped[str] = mapped_column(String(16))  # completions | embeddings
    num_model_requests: Mapped[int] = mapped_column(BigInteger)
    input_tokens: Mapped[int] = mapped_column(BigInteger)
    input_cached_tokens: Mapped[int] = mapped_column(BigInteger)
    output_tokens: Mapped[int] = mapped_column(BigInteger)
    cost: Mapped[int] = mapped_column(BigInteger)  # nano-USD
