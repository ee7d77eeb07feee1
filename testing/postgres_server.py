"""A PostgreSQL server of a test's own (Debian's postgresql package's initdb and
postgres, on a free port, its data in a temporary folder), that the test may stop and
start again as a deployment's database goes away and comes back, without touching the
machine's own server (which other test processes share).

initdb and postgres refuse to run as root: as root they run as the ``postgres`` user
(the package makes it), in a folder that user owns.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from testing.fake_model_server import free_port

# Debian's layout: /usr/lib/postgresql/<major>/bin; elsewhere, on the PATH.
BINARIES = "/usr/lib/postgresql/*/bin"
RUN_AS = "postgres"  # the user the server runs as when the tests run as root
DATABASE = "control"
# The password the test gives the server's superuser (the URL holds it, as a deployment's
# does): a test checks that no answer or log line shows it.
PASSWORD = "pg-secret-7f3a9c"


def postgres_bin() -> Path | None:
    """The folder of the newest PostgreSQL's initdb and postgres, or None."""
    found = sorted(glob.glob(BINARIES), key=lambda path: int(Path(path).parent.name or 0))
    if found:
        return Path(found[-1])
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PostgresServer:
    """A PostgreSQL server on 127.0.0.1:`port` with password authentication and one
    database, ``control``; its data kept between `stop` and `start`."""

    def __init__(self, binaries: Path, port: int | None = None) -> None:
        self.binaries = binaries
        self.port = port or free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="test-postgres-"))
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"
        self._as: dict[str, Any] = {}
        if os.geteuid() == 0:
            user = pwd.getpwnam(RUN_AS)
            os.chown(self.folder, user.pw_uid, user.pw_gid)
            self._as = {"user": user.pw_uid, "group": user.pw_gid}
        self._initialized = False

    @property
    def url(self) -> str:
        """The URL the gateway is given (CONTROL_DATABASE_URL)."""
        return f"postgresql://postgres:{PASSWORD}@127.0.0.1:{self.port}/{DATABASE}"

    def _run(self, *args: str) -> None:
        subprocess.run(args, check=True, capture_output=True, timeout=60, cwd=self.folder, **self._as)

    def start(self) -> PostgresServer:
        """Start the server (made on first start) and wait until it takes connections."""
        if not self._initialized:
            password_file = self.folder / "password"
            password_file.write_text(PASSWORD)
            if self._as:
                os.chown(password_file, self._as["user"], self._as["group"])
            self._run(
                str(self.binaries / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=scram-sha-256",
                f"--pwfile={password_file}", "--no-sync", "-E", "UTF8",
            )  # fmt: skip
            self._initialized = True
        # No Unix socket (its default folder is the machine's server's); fsync off: the
        # test's data need not survive a crash of the machine, only a clean stop.
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories='' -c fsync=off"
        self._run(
            str(self.binaries / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start"
        )
        if not self._database_exists():
            with self._connect("postgres") as connection:
                connection.execute(f"CREATE DATABASE {DATABASE}")
        return self

    def stop(self) -> None:
        """Stop as an operator's restart does (``pg_ctl stop -m fast``): open sessions are
        ended, clients see their connections close, and new ones are refused."""
        if self.data.exists() and (self.data / "postmaster.pid").exists():
            self._run(str(self.binaries / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        """Stop it if running, and delete its data."""
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _connect(self, database: str) -> psycopg.Connection:
        return psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", password=PASSWORD, dbname=database, autocommit=True
        )

    def _database_exists(self) -> bool:
        deadline = time.monotonic() + 10
        while True:
            try:
                with self._connect("postgres") as connection:
                    found = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
                    return found is not None
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
