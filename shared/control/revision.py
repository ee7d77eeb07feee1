"""Write the next migration step from the difference between shared/control/models.py and
the schema the steps so far make: ``python -m shared.control.revision "what changed"``.
Read it before committing: Alembic's autogenerate misses some changes (a column renamed
is a drop and an add, a server default changed is not seen)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig

from shared.control.database import MIGRATIONS, engine_for, migrate


def write_revision(message: str) -> None:
    """The next step (``0002_…``), compared against a scratch SQLite database at head."""
    steps = sorted(path.name for path in (MIGRATIONS / "versions").glob("[0-9][0-9][0-9][0-9]_*.py"))
    number = int(steps[-1][:4]) + 1 if steps else 1
    with tempfile.TemporaryDirectory() as folder:
        engine = engine_for(f"sqlite:///{Path(folder) / 'scratch.db'}")
        migrate(engine)
        with engine.begin() as connection:
            settings = AlembicConfig()
            settings.set_main_option("script_location", str(MIGRATIONS))
            settings.set_main_option("path_separator", "os")
            settings.set_main_option("file_template", "%%(rev)s_%%(slug)s")
            settings.attributes["connection"] = connection
            command.revision(settings, message, autogenerate=True, rev_id=f"{number:04d}")
        engine.dispose()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit('usage: python -m shared.control.revision "what changed"')
    write_revision(sys.argv[1])
