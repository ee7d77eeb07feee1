"""The control plane's tables (shared/control/models.py): what a row says of itself."""

from __future__ import annotations

import pytest

from shared.control.models import Base, Project

pytestmark = pytest.mark.unit


def test_a_project_is_active_until_it_is_archived() -> None:
    project = Project(id="proj_x", name="research", created_at=1, archived_at=None)
    assert project.status == "active"
    project.archived_at = 2
    assert project.status == "archived"


def test_every_table_has_a_primary_key() -> None:
    assert Base.metadata.tables
    for table in Base.metadata.tables.values():
        assert list(table.primary_key.columns), table.name
