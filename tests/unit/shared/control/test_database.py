"""The control plane's database: its migrations make exactly the tables of the models, and
API processes starting together migrate it once. On SQLite files (PostgreSQL's turn is in
tests/integration/shared/test_control_database.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select, text

from shared.control.database import engine_for, migrate, shown
from shared.control.models import Base, ControlState
from testing.control_databases import migrate_at_once

pytestmark = pytest.mark.unit


def test_the_migrations_make_exactly_the_models_tables(tmp_path: Path) -> None:
    engine = engine_for(f"sqlite:///{tmp_path}/control.db")
    migrate(engine)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert differences == [], "models.py changed without a migration: python -m shared.control.revision '...'"
        assert connection.execute(select(ControlState.version)).scalar_one() == 0
    engine.dispose()


def test_api_processes_starting_together_migrate_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/nested/folder/control.db"  # its folder made as it migrates
    assert migrate_at_once(url) == []
    engine = engine_for(url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).all() == [("0002",)]
        assert connection.execute(select(ControlState.id, ControlState.version)).all() == [(1, 0)]
        tables = set(inspect(connection).get_table_names())
        assert tables >= {"projects", "project_api_keys", "audit_logs", "project_rate_limits", "usage_buckets"}
    engine.dispose()


def test_a_postgresql_url_is_psycopg_3s_and_its_password_never_shown() -> None:
    engine = engine_for("postgresql://gateway:s3cret@db.internal:5432/control")
    assert engine.dialect.driver == "psycopg"
    assert shown("postgresql://gateway:s3cret@db.internal:5432/control") == (
        "postgresql://gateway:***@db.internal:5432/control"
    )
    engine.dispose()
