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
from api.errors import BadRequest, Conflict, ControlPlaneUnavailable, NotFound, ReadOnly
from api.observability.metrics import Metrics
from api.tenancy.control_sync import ControlSync
from api.tenancy.guard import Guard
from api.tenancy.spend import MonthSpend
from shared.config import Config
from shared.control.database import engine_for
from shared.control.store import ControlStore
from shared.registry import Model, Registry, load_registry
from shared.tenants import AdminGrant, ModelLimits, digest
from testing.fake_model_server import free_port

pytestmark = pytest.mark.unit

ADMIN = AdminGrant("key_cfg_0", "test")
TENANTS = """
tenants:
  - name: research
    keys: ["key-research"]
  - name: product
    keys: ["key-product"]
    quotas: {requests_per_minute: 600, tokens_per_minute: 90000}
"""
# Two models: a project's rate limits are one per model, named by it (a "/" and a ":" too).
REGISTRY = Registry(
    (Model("small", "http://127.0.0.1:1", "q.small"), Model("org/big:8b", "http://127.0.0.1:2", "q.big")),
    Model("small", "http://127.0.0.1:1", "q.small"),
)


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
    yield ControlPlane(config, store, sync, guard.tenants, REGISTRY, spend), guard
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


def test_model_permissions_name_models_of_the_registry_and_are_held_before_the_answer(
    plane: tuple[ControlPlane, Guard], tmp_path: Path
) -> None:
    control, guard = plane
    models = '{"models": [{"name": "small", "aliases": ["quick"], "url": "http://a:1"}, {"name": "large", "url": "http://b:1"}]}'
    control._registry = load_registry(Config(_env_file=None, models=models))  # type: ignore[call-arg]

    async def main() -> None:
        project = (await control.create_project(ADMIN, types.CreateProject(name="p")))["id"]
        every = {"object": "project.model_permissions", "mode": "deny_list", "model_ids": []}
        assert await control.model_permissions(project) == every  # none set: every model
        assert await control.model_permissions("research") == every  # a keys file's tenant: every model
        body = types.UpdateModelPermissions(mode="allow_list", model_ids=["quick", "made-up"])
        with pytest.raises(BadRequest, match=r"^model_ids\[1\]: model 'made-up' is not served here"):
            await control.update_model_permissions(ADMIN, project, body)
        assert await control.model_permissions(project) == every  # nothing stored
        body = types.UpdateModelPermissions(mode="allow_list", model_ids=["quick"])
        answer = await control.update_model_permissions(ADMIN, project, body)
        assert answer == {"object": "project.model_permissions", "mode": "allow_list", "model_ids": ["quick"]}
        assert await control.model_permissions(project) == answer
        held = guard.tenants.runtime.projects[project].models  # held by this process as it answered
        assert held is not None and held.mode == "allow_list" and held.model_ids == {"quick"}
        with pytest.raises(ReadOnly, match="API_KEYS_FILE"):
            await control.update_model_permissions(ADMIN, "research", body)
        with pytest.raises(ReadOnly):
            await control.delete_model_permissions(ADMIN, "research")
        with pytest.raises(NotFound):
            await control.update_model_permissions(ADMIN, "proj_none", body)
        deleted = await control.delete_model_permissions(ADMIN, project)
        assert deleted == {"object": "project.model_permissions.deleted", "deleted": True}
        assert guard.tenants.runtime.projects[project].models is None
        assert (await control.delete_model_permissions(ADMIN, project))["deleted"] is False


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


def test_a_projects_rate_limits_are_one_per_model_set_field_by_field_and_held_before_the_answer(
    plane: tuple[ControlPlane, Guard],
) -> None:
    control, guard = plane

    async def main() -> None:
        project = (await control.create_project(ADMIN, types.CreateProject(name="p")))["id"]
        made = await control.create_service_account(ADMIN, project, types.CreateServiceAccount(name="bot"))
        listed = await control.rate_limits(project, None, None, 100)
        assert ids(listed) == ["rl-small", "rl-org/big:8b"] and not listed["has_more"]
        assert listed["data"][1] == {
            "object": "project.rate_limit", "id": "rl-org/big:8b", "model": "org/big:8b",
            "max_requests_per_1_minute": 0, "max_tokens_per_1_minute": 0, "max_requests_per_1_day": None,
            "batch_1_day_max_input_tokens": None,
        }  # fmt: skip

        body = types.UpdateRateLimit(max_requests_per_1_minute=20, max_requests_per_1_day=500)
        updated = await control.update_rate_limit(ADMIN, project, "rl-org/big:8b", body)
        assert (updated["max_requests_per_1_minute"], updated["max_tokens_per_1_minute"]) == (20, 0)
        assert updated["max_requests_per_1_day"] == 500 and updated["batch_1_day_max_input_tokens"] is None
        # Held by this process before it answered: the key's tenant carries it.
        tenant = guard.tenants.find(digest(made["api_key"]["value"]), time.time())
        assert tenant is not None and tenant.model_limits == {"org/big:8b": ModelLimits(20, 0, 500, 0)}
        # Another field later leaves the first as it was; 0 clears one.
        body = types.UpdateRateLimit(max_tokens_per_1_minute=1000, max_requests_per_1_minute=0)
        updated = await control.update_rate_limit(ADMIN, project, "rl-org/big:8b", body)
        assert (updated["max_requests_per_1_minute"], updated["max_tokens_per_1_minute"]) == (0, 1000)
        assert updated["max_requests_per_1_day"] == 500
        tenant = guard.tenants.find(digest(made["api_key"]["value"]), time.time())
        assert tenant is not None and tenant.model_limits == {"org/big:8b": ModelLimits(0, 1000, 500, 0)}
        # Nothing asked: nothing changed.
        same = await control.update_rate_limit(ADMIN, project, "rl-small", types.UpdateRateLimit())
        assert same["max_requests_per_1_minute"] == 0 and same["max_requests_per_1_day"] is None

    asyncio.run(main())


def test_rate_limits_page_after_and_before_and_a_cursor_naming_no_model_gives_nothing(
    plane: tuple[ControlPlane, Guard],
) -> None:
    control, _ = plane

    async def main() -> None:
        project = (await control.create_project(ADMIN, types.CreateProject(name="p")))["id"]
        first = await control.rate_limits(project, None, None, 1)
        assert ids(first) == ["rl-small"] and first["has_more"] and first["last_id"] == "rl-small"
        second = await control.rate_limits(project, "rl-small", None, 1)
        assert ids(second) == ["rl-org/big:8b"] and not second["has_more"]
        back = await control.rate_limits(project, None, "rl-org/big:8b", 1)
        assert ids(back) == ["rl-small"] and not back["has_more"]
        assert ids(await control.rate_limits(project, "rl-gone", None, 10)) == []

    asyncio.run(main())


def test_rate_limits_refused_as_the_api_refuses_and_a_keys_files_tenant_shows_its_own_quotas(
    plane: tuple[ControlPlane, Guard],
) -> None:
    control, _ = plane

    async def main() -> None:
        some = types.UpdateRateLimit(max_requests_per_1_minute=5)
        with pytest.raises(NotFound, match="no project with id 'proj_none'"):
            await control.rate_limits("proj_none", None, None, 10)
        with pytest.raises(NotFound, match="no project"):
            await control.update_rate_limit(ADMIN, "proj_none", "rl-small", some)
        project = (await control.create_project(ADMIN, types.CreateProject(name="p")))["id"]
        for unknown in ("rl-nothing", "small", "rl-"):
            with pytest.raises(NotFound, match="no rate limit"):
                await control.update_rate_limit(ADMIN, project, unknown, some)
        with pytest.raises(BadRequest, match="rate_limit_id: holds bytes that are not UTF-8"):
            await control.update_rate_limit(ADMIN, project, "rl-\ufffd\ufffd", some)
        with pytest.raises(ReadOnly, match="API_KEYS_FILE"):
            await control.update_rate_limit(ADMIN, "product", "rl-small", some)
        declared = (await control.rate_limits("product", None, None, 10))["data"]
        assert [(found["max_requests_per_1_minute"], found["max_tokens_per_1_minute"]) for found in declared] == [
            (600, 90000), (600, 90000),
        ]  # fmt: skip
        assert (await control.rate_limits("research", None, None, 10))["data"][0]["max_requests_per_1_minute"] == 0
        await control.archive_project(ADMIN, project)
        with pytest.raises(Conflict, match="archived"):
            await control.update_rate_limit(ADMIN, project, "rl-small", some)
        assert ids(await control.rate_limits(project, None, None, 10)) == ["rl-small", "rl-org/big:8b"]

    asyncio.run(main())
