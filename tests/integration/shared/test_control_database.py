"""The control plane's database on SQLite and PostgreSQL: API processes starting together
migrate it once (each its own connection, as separate processes would), and a read of
what API processes hold sees one version's whole state."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select, text

from shared.control.database import engine_for, migrate
from shared.control.models import ControlState
from shared.control.store import Actor, ControlStore
from testing.control_databases import ControlDatabases, migrate_at_once

pytestmark = pytest.mark.integration

ADMIN = Actor("key_test", "test")


def test_api_processes_starting_together_migrate_once(control_databases: ControlDatabases) -> None:
    url = control_databases.fresh()
    assert migrate_at_once(url) == []
    engine = engine_for(url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).all() == [("0002",)]
        assert connection.execute(select(ControlState.id, ControlState.version)).all() == [(1, 0)]
    engine.dispose()


def test_changes_made_at_once_each_get_their_own_version(control_databases: ControlDatabases) -> None:
    engine = engine_for(control_databases.fresh())
    migrate(engine)
    store = ControlStore(engine)
    made: list[str] = []
    failures: list[BaseException] = []

    def make(n: int) -> None:
        try:
            made.append(store.create_project(ADMIN, f"project {n}").id)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=make, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    directory = store.directory(max_priority=5)
    assert directory.version == 8 and set(directory.projects) == set(made)
    engine.dispose()
