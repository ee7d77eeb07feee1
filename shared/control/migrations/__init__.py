"""The control plane's Alembic migrations, shipped in the package and run by the API as it
starts (shared/control/database.py: `migrate`). A new one: change shared/control/models.py,
then ``python -m shared.control.revision "what changed"`` writes the step."""
