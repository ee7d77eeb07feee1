"""The control plane's database: its engine (a SQLite file by default, PostgreSQL through
psycopg 3), and its migrations, run as an API process starts.

Several API processes start at once: the migrations run inside one transaction that
first takes a lock every other process waits on (PostgreSQL: a transaction-scoped
advisory lock; SQLite: ``BEGIN IMMEDIATE``, the database's write lock). The first runs
them; the others then find the schema at its head and do nothing.

On SQLite every transaction begins with ``BEGIN IMMEDIATE``: two writers never both hold
a read lock they then both need to upgrade (which SQLite answers with "database is
locked" at once, whatever the timeout); they wait their turn instead. The control plane
is written rarely (admin calls) and read rarely (on change), so serializing costs nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from urllib.parse import quote

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# The advisory lock's key on PostgreSQL (any 64-bit number the deployment uses for nothing
# else): the bytes of "llm-ctl" read as an integer.
MIGRATION_LOCK = int.from_bytes(b"llm-ctl", "big")
# libpq's TCP settings of every PostgreSQL connection (a URL's own query parameters win):
# keepalive probes after 10 s of silence, every 5 s, 3 unanswered and the connection is
# closed; data sent and unacknowledged for 20 s closes it too.
POSTGRES_KEEPALIVES = {
    "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3,
    "tcp_user_timeout": 20_000,
}  # fmt: skip
# Seconds a SQLite connection waits for another's write lock before giving up.
SQLITE_BUSY_SECONDS = 30.0


def engine_for(url: str, connect_timeout: float = 5.0) -> Engine:
    """The engine of the database at `url` (``sqlite:///path``, ``postgresql+psycopg://…``;
    ``postgresql://`` is taken as psycopg 3's); nothing is connected to yet."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_SECONDS})
        _serialize_sqlite(engine)
        return engine
    args: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql":
        args["connect_timeout"] = max(1, int(connect_timeout))
        # A connection whose server went silent (its host gone, a network dropping its
        # packets) fails within about half a minute rather than the system's two hours:
        # the thread waiting on it is the control plane's again (api/tenancy/control_sync.py).
        args |= {name: value for name, value in POSTGRES_KEEPALIVES.items() if name not in parsed.query}
    # pool_pre_ping: a connection PostgreSQL closed while it restarted is replaced, not
    # handed to the next call to fail.
    return create_engine(parsed, connect_args=args, pool_pre_ping=True, pool_size=2, max_overflow=4)


def _serialize_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(connection: Any, _record: Any) -> None:
        # pysqlite's own BEGIN (deferred, and not before DDL) is replaced by ours below.
        connection.isolation_level = None
        cursor = connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def migrate(engine: Engine) -> None:
    """Bring the database's schema to the migrations' head, under the lock (see above); a
    SQLite file's folder is made first if missing."""
    database = engine.url.database
    if engine.dialect.name == "sqlite" and database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        settings = AlembicConfig()
        settings.set_main_option("script_location", str(MIGRATIONS))
        settings.set_main_option("path_separator", "os")
        settings.attributes["connection"] = connection
        command.upgrade(settings, "head")


# libpq's connection parameters that hold a secret: a URI may give them as query parameters
# (``?password=…``) as well as in its user part.
SECRET_PARAMETERS = frozenset({"password", "sslpassword"})
HIDDEN = "***"


def shown(url: str) -> str:
    """A database URL as logs and messages may show it: without its password, wherever
    in the URL it was written."""
    parsed = make_url(url)
    hidden = {name: HIDDEN for name in parsed.query if name.lower() in SECRET_PARAMETERS}
    rendered = parsed.update_query_dict(hidden).render_as_string(hide_password=True)
    # Rendering quotes a query's value: the mark is shown as the user part's is.
    return rendered.replace(quote(HIDDEN, safe=""), HIDDEN)
