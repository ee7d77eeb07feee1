"""rate limits, model permissions, spend limits, usage history, keys' last use

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07 20:05:58.185267
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""

    op.create_table(
        "usage_buckets",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("width", sa.String(length=4), nullable=False),
        sa.Column("start_time", sa.BigInteger(), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=256), nullable=False),
        sa.Column("api_key_id", sa.String(length=64), nullable=False),
        sa.Column("batch", sa.Boolean(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("num_model_requests", sa.BigInteger(), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("input_cached_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_usage_buckets")),
        sa.UniqueConstraint(
            "width", "start_time", "project_id", "model", "api_key_id", "batch", "kind", name="uq_usage_buckets_bucket"
        ),
    )
    op.create_index("ix_usage_buckets_width_start_time", "usage_buckets", ["width", "start_time"], unique=False)
    op.create_table(
        "project_model_permissions",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("model_ids", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_project_model_permissions_project_id_projects")
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_project_model_permissions")),
        sa.UniqueConstraint("project_id", name=op.f("uq_project_model_permissions_project_id")),
    )
    op.create_table(
        "project_rate_limits",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=256), nullable=False),
        sa.Column("max_requests_per_1_minute", sa.BigInteger(), nullable=True),
        sa.Column("max_tokens_per_1_minute", sa.BigInteger(), nullable=True),
        sa.Column("max_requests_per_1_day", sa.BigInteger(), nullable=True),
        sa.Column("batch_1_day_max_input_tokens", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_project_rate_limits_project_id_projects")
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_project_rate_limits")),
        sa.UniqueConstraint("project_id", "model", name="uq_project_rate_limits_project_id_model"),
    )
    op.create_table(
        "project_spend_limits",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("threshold_amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=8), nullable=False),
        sa.Column("interval", sa.String(length=16), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_project_spend_limits_project_id_projects")
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_project_spend_limits")),
        sa.UniqueConstraint("project_id", name=op.f("uq_project_spend_limits_project_id")),
    )
    op.add_column("project_api_keys", sa.Column("last_used_at", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""

    op.drop_column("project_api_keys", "last_used_at")
    op.drop_table("project_spend_limits")
    op.drop_table("project_rate_limits")
    op.drop_table("project_model_permissions")
    op.drop_index("ix_usage_buckets_width_start_time", table_name="usage_buckets")
    op.drop_table("usage_buckets")
