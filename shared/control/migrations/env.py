"""Alembic's environment for the control plane: always run on the connection (and in the
transaction, under its lock) that shared/control/database.py `migrate` hands it."""

from __future__ import annotations

from alembic import context

from shared.control.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("the control plane's migrations run through shared.control.database.migrate")
context.configure(connection=connection, target_metadata=Base.metadata, transactional_ddl=True)
with context.begin_transaction():
    context.run_migrations()
