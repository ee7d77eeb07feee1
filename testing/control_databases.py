"""Fresh databases for the control plane's tests: a SQLite file, or a schema of its own
in this machine's PostgreSQL (127.0.0.1:5432, trust auth, database ``test``: as .ci/run
starts it), dropped when the tests are done."""

from __future__ import annotations

import multiprocessing
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

POSTGRES = ("127.0.0.1", 5432)
POSTGRES_DATABASE = "test"
POSTGRES_USER = "postgres"


def postgres_url(schema: str, address: tuple[str, int] = POSTGRES) -> str:
    """The URL of `schema` of the test database at `address` (its tables made there); a
    statement that waits for a lock more than 20 s fails, rather than a test hanging."""
    host, port = address
    options = f"-csearch_path%3D{schema}%20-clock_timeout%3D20s"
    return f"postgresql://{POSTGRES_USER}@{host}:{port}/{POSTGRES_DATABASE}?options={options}"


def _admin() -> psycopg.Connection:
    host, port = POSTGRES
    return psycopg.connect(host=host, port=port, user=POSTGRES_USER, dbname=POSTGRES_DATABASE, autocommit=True)


@dataclass
class ControlDatabases:
    """Makes empty control-plane databases of one kind ("sqlite" or "postgresql")."""

    kind: str
    folder: Path
    schemas: list[str] = field(default_factory=list)

    def fresh(self, address: tuple[str, int] = POSTGRES) -> str:
        """The URL of a new, empty database (PostgreSQL: a new schema, reached at `address`)."""
        name = f"test_control_{uuid.uuid4().hex[:12]}"
        if self.kind == "sqlite":
            return f"sqlite:///{self.folder / name}.db"
        with _admin() as connection:
            connection.execute(f'CREATE SCHEMA "{name}"')
        self.schemas.append(name)
        return postgres_url(name, address)

    def drop(self) -> None:
        """Drop the schemas made."""
        if not self.schemas:
            return
        with _admin() as connection:
            for name in self.schemas:
                connection.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        self.schemas.clear()


def _migrate_one(url: str, start: Any, failures: Any) -> None:
    from shared.control.database import engine_for, migrate  # in the child process

    engine = engine_for(url)
    try:
        start.wait(60)
        migrate(engine)
    except BaseException as exc:  # noqa: BLE001 - the parent reports it
        failures.put(repr(exc))
    finally:
        engine.dispose()


def migrate_at_once(url: str, processes: int = 4) -> list[str]:
    """Migrate the database at `url` from `processes` processes at the same moment, as API
    processes starting together do; what each that failed raised (none: all went well)."""
    context = multiprocessing.get_context("spawn")
    start, failures = context.Barrier(processes), context.Queue()
    started = [context.Process(target=_migrate_one, args=(url, start, failures)) for _ in range(processes)]
    for process in started:
        process.start()
    for process in started:
        process.join(120)
        if process.is_alive():
            process.kill()
            failures.put("a process's migrations waited on another's for 120 s")
    found = []
    while not failures.empty():
        found.append(failures.get())
    return found
