"""Fresh databases for the control plane's tests: a SQLite file, or a schema of its own
in this machine's PostgreSQL (127.0.0.1:5432, trust auth, database ``test``: as .ci/run
starts it), dropped when the tests are done."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

POSTGRES = ("127.0.0.1", 5432)
POSTGRES_DATABASE = "test"
POSTGRES_USER = "postgres"


def postgres_url(schema: str, address: tuple[str, int] = POSTGRES) -> str:
    """The URL of `schema` of the test database at `address` (its tables made there)."""
    host, port = address
    return f"postgresql://{POSTGRES_USER}@{host}:{port}/{POSTGRES_DATABASE}?options=-csearch_path%3D{schema}"


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
