"""The control plane: projects, their service accounts and API keys, admin API keys and
the audit log, kept in a SQL database (SQLAlchemy, migrated by Alembic at the API's
start). Only the API uses it, and off the request path: each API process holds what
requests need in memory (`shared.tenants.Directory`), reloaded on change notices.

- `ids`: the ids and key values it makes, and how a key is shown redacted;
- `models`: the tables; `database`: the engine and the migrations, run under a lock;
- `store`: every change and read, each one transaction, each change audited.
"""
