"""The control plane behind /v1/organization/*, on a SQLite file: the keys file's tenants
listed first as read-only projects, then those made here, page after page; the store's
failures as the API's; a change held by this process before it answers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from api.admin import types
from api.admin.serving import ControlPlane
from api.errors import Conflict, ControlPlaneUnavailable, NotFound, ReadOnly
from api.observability.metrics import Metrics
from api.tenancy.control_sync import ControlSync
from api.tenancy.guard import Guard
from api.tenancy.spend import MonthSpend
from shared.config import Config
from shared.control.database import engine_for
from shared.control.store import ControlStore
from shared.tenants import AdminGrant, digest
from testing.fake_model_server import free_port

pytestmark = pytest.mark.unit

ADMIN = AdminGrant("key_cfg_0", "test")
TENANTS = """
tenants:
  - name: research
    keys: ["key-research"]
  - name: product
    keys: ["key-product"]
"""


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[tuple[ControlPlane, Guard]]:
    keys_file = tmp_path / "tenants.yaml"
    keys_file.write_text(TENANTS)
    config = Config(  # type: ignore[call-arg]
        _env_file=None, api_keys_file=str(keys_file), control_database_url=f"sqlite:///{tmp_path}/control.db"
    )
    nowhere = aioredis.Redis(
        port=free_port(), retry=Retry(NoBackoff(), 0)
    )  # the notice is lost: this process holds the change itself
    store = ControlStore(engine_for(config.control_database))
    guard = Guard(config, nowhere, Metrics())
    sync = ControlSync(config, store, guard, nowhere)
    asyncio.run(sync.start())
    spend = MonthSpend(config, store, guard.tenants, nowhere)
    yield ControlPlane(config, store, sync, guard.tenants, spend), guard
    store.engine.dispose()


def ids(listing: dict[str, Any]) -> list[str]:
    return [found["id"] for found in listing["data"]]


def test_the_files_tenants_come_first_then_the_projects_made_here_page_after_page(
    plane: tuple[ControlPlane, Guard],
) -> None:
    control, _ = plane

    async def main() -> list[list[str]]:
        made = [(await control.create_project(ADMIN, types.CreateProject(name=f"p{n}")))["id"] for n in range(3)]
        everything = ["default", "research", "product", *made]
        assert ids(await control.projects(None, 100, False)) == everything
        pages = []
        for limit in (1, 2, 3, 4):
            after, seen, more = None, [], True
            while more:
                page = await control.projects(after, limit, False)
                assert len(page["data"]) <= limit
                seen += ids(page)
                after, more = page["last_id"], page["has_more"]
            pages.append(seen)
        assert all(seen == everything for seen in pages)
        return pages

    asyncio.run(main())


def test_a_change_is_held_by_this_process_before_it_answers(plane: tuple[ControlPlane, Guard]) -> None:
    control, guard = plane

    async def main() -> None:
        project = await control.create_project(ADMIN, types.CreateProject(name="p"))
        made = await control.create_service_account(ADMIN, project["id"], types.CreateServiceAccount(name="bot"))
        # No Redis here, no poll run: the answer came after this process held the key.
        assert guard.tenants.find(digest(made["api_key"]["value"]), time.time()) is not None
        await control.delete_key(ADMIN, project["id"], made["api_key"]["id"])
        assert guard.tenants.find(digest(made["api_key"]["value"]), time.time()) is None

    asyncio.run(main())


def test_the_stores_refusals_are_the_apis(plane: tuple[ControlPlane, Guard]) -> None:
    control, _ = plane

    async def main() -> None:
        with pytest.raises(NotFound, match="no project with id 'proj_none'"):
            await control.project("proj_none")
        with pytest.raises(ReadOnly, match="API_KEYS_FILE"):
            await control.archive_project(ADMIN, "research")
        with pytest.raises(ReadOnly):
            await control.create_service_account(ADMIN, "product", types.CreateServiceAccount(name="x"))
        assert (await control.project("research"))["status"] == "active"
        assert ids(await control.service_accounts("research", None, 10)) == []
        project = await control.create_project(ADMIN, types.CreateProject(name="p"))
        await control.archive_project(ADMIN, project["id"])
        with pytest.raises(Conflict, match="archived"):
            await control.create_service_account(ADMIN, project["id"], types.CreateServiceAccount(name="x"))

    asyncio.run(main())


def test_a_database_away_is_a_503_not_a_500(plane: tuple[ControlPlane, Guard], tmp_path: Path) -> None:
    control, _ = plane
    control._store.engine.dispose()
    (tmp_path / "control.db").rename(tmp_path / "away.db")
    (tmp_path / "control.db").mkdir()
    with pytest.raises(ControlPlaneUnavailable):
        asyncio.run(control.create_project(ADMIN, types.CreateProject(name="p")))


def test_a_spend_limit_is_set_read_held_by_the_process_and_removed(plane: tuple[ControlPlane, Guard]) -> None:
    control, guard = plane

    async def main() -> None:
        project = (await control.create_project(ADMIN, types.CreateProject(name="budgeted")))["id"]
        with pytest.raises(NotFound, match="no spend limit"):
            await control.spend_limit(project)
        asked = types.UpdateSpendLimit(threshold_amount=2500, currency="USD", interval="month")
        made = await control.update_spend_limit(ADMIN, project, asked)
        assert made == {
            "object": "project.spend_limit", "threshold_amount": 2500, "currency": "USD", "interval": "month",
            "enforcement": {"status": "inactive"},
        }  # fmt: skip
        assert await control.spend_limit(project) == made
        # Held before the answer: this process's next request is checked against it.
        assert guard.tenants.runtime.projects[project].spend_limit == 2500
        replaced = await control.update_spend_limit(ADMIN, project, asked.model_copy(update={"threshold_amount": 7}))
        assert replaced["threshold_amount"] == 7
        assert await control.delete_spend_limit(ADMIN, project) == {"object": "project.spend_limit.deleted",
                                                                   "deleted": True}  # fmt: skip
        assert guard.tenants.runtime.projects[project].spend_limit is None
        with pytest.raises(NotFound):
            await control.delete_spend_limit(ADMIN, project)
        with pytest.raises(NotFound):
            await control.update_spend_limit(ADMIN, "proj_000000000000000000000000", asked)
        with pytest.raises(ReadOnly, match="keys file"):
            await control.update_spend_limit(ADMIN, "research", asked)
        with pytest.raises(NotFound, match="no spend limit"):
            await control.spend_limit("research")

    asyncio.run(main())
