"""The control plane's database: its migrations make exactly the tables of the models, and
API processes starting together migrate it once. On SQLite files (PostgreSQL's turn is in
tests/integration/shared/test_control_database.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, event, inspect, select, text

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
    # A server gone silent is found out (keepalives), not waited on for the system's two
    # hours; a URL's own settings win.
    options = connection_options(engine)
    assert options["keepalives_idle"] == 10 and options["tcp_user_timeout"] == 20_000
    tuned = engine_for("postgresql://gateway:s3cret@db.internal:5432/control?keepalives_idle=30")
    assert connection_options(tuned)["keepalives_idle"] == "30"
    assert shown("postgresql://gateway:s3cret@db.internal:5432/control") == (
        "postgresql://gateway:***@db.internal:5432/control"
    )
    engine.dispose()


def connection_options(engine: Engine) -> dict[str, Any]:
    """What the engine would give psycopg to connect with (nothing is connected to)."""
    seen: dict[str, Any] = {}

    @event.listens_for(engine, "do_connect")
    def _capture(_dialect: Any, _record: Any, _args: Any, options: dict[str, Any]) -> None:
        seen.update(options)
        raise LookupError("not connecting")

    with pytest.raises(LookupError):
        engine.connect()
    engine.dispose()
    return seen


def test_a_password_given_as_a_query_parameter_is_never_shown_either() -> None:
    # libpq takes the password (and a client key's passphrase) as a URI's query
    # parameters too: a URL written so must not show them in the log a failed start writes.
    url = "postgresql://gateway@db.internal:5432/control?password=s3cret&sslmode=require&SSLPassword=k3y"
    assert shown(url) == "postgresql://gateway@db.internal:5432/control?SSLPassword=***&password=***&sslmode=require"
    assert "s3cret" not in shown(url) and "k3y" not in shown(url)
