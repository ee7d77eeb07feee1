"""Each migration step, in order (Alembic's revisions)."""
