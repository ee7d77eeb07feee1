"""The guard (api/tenancy/guard.py) with the control plane: its answer to each key, the keys
file's and the projects' (made at runtime, held in memory), admin API keys, keys deleted or
expired, and a gateway without keys."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

import pytest
import redis.asyncio as aioredis

from api.errors import Forbidden, Unauthorized
from api.observability.metrics import Metrics
from api.tenancy.guard import Guard
from shared.config import Config
from shared.tenants import DEFAULT_TENANT, AdminGrant, Directory, Grant, Quotas, Tenant, digest

pytestmark = pytest.mark.unit

PROJECT = Tenant("proj_0123456789abcdef01234567", quotas=Quotas(max_priority=5))
PROJECT_KEY = "sk-proj-live-key"
EXPIRED_KEY = "sk-proj-expired-key"
ADMIN_KEY = "sk-admin-configured"
RUNTIME_ADMIN = "sk-admin-made-at-runtime"


def guard(**settings: Any) -> Guard:
    made = Guard(Config(_env_file=None, **settings), aioredis.Redis(), Metrics())  # type: ignore[call-arg]
    now = time.time()
    made.use(
        Directory(
            version=3,
            projects={PROJECT.name: PROJECT},
            keys={
                digest(PROJECT_KEY): Grant(PROJECT, "key_live"),
                digest(EXPIRED_KEY): Grant(PROJECT, "key_expired", expires_at=now - 1),
            },
            admin_keys={digest(RUNTIME_ADMIN): AdminGrant("key_admin", "runtime")},
        )
    )
    return made


def bearer(key: str) -> str:
    return f"Bearer {key}"


def test_a_projects_key_is_its_projects_tenant_beside_the_files_keys() -> None:
    keyed = guard(api_keys="key-default", admin_api_keys=ADMIN_KEY)
    # Its project's tenant, naming the key (its jobs' usage is counted to it).
    assert asyncio.run(keyed.admit(bearer(PROJECT_KEY), "10.0.0.1")) == replace(PROJECT, key_id="key_live")
    assert asyncio.run(keyed.admit(bearer("key-default"), "10.0.0.1")).name == DEFAULT_TENANT
    assert keyed.owner(PROJECT).name == f"tenant:{PROJECT.name}" and not keyed.owner(PROJECT).every
    assert keyed.tenants.get(PROJECT.name) == PROJECT  # a stored job of the project finds its tenant
    for refused in (EXPIRED_KEY, "sk-proj-deleted", "nonsense", ""):
        with pytest.raises(Unauthorized):
            asyncio.run(keyed.admit(bearer(refused) if refused else "", "10.0.0.1"))


def test_admin_api_keys_reach_the_organization_alone() -> None:
    keyed = guard(api_keys="key-default", admin_api_keys=f"{ADMIN_KEY}, sk-admin-second")
    configured = asyncio.run(keyed.admin(bearer(ADMIN_KEY)))
    assert configured.key_id.startswith("key_cfg_") and configured.key_id[8:] == digest(ADMIN_KEY).hex()[:16]
    assert asyncio.run(keyed.admin(bearer("sk-admin-second"))).key_id != configured.key_id
    assert asyncio.run(keyed.admin(bearer(RUNTIME_ADMIN))).key_id == "key_admin"
    for tenant_key in (PROJECT_KEY, "key-default"):
        with pytest.raises(Forbidden):
            asyncio.run(keyed.admin(bearer(tenant_key)))
    for nobody in ("", "Basic abc", bearer("sk-admin-unknown"), bearer(EXPIRED_KEY)):
        with pytest.raises(Unauthorized):
            asyncio.run(keyed.admin(nobody))
    for admin in (ADMIN_KEY, RUNTIME_ADMIN):  # refused on the tenants' endpoints, let into the operators'
        with pytest.raises(Forbidden, match="admin API key"):
            asyncio.run(keyed.admit(bearer(admin), "10.0.0.1"))
        asyncio.run(keyed.operator(bearer(admin)))


def test_an_expired_admin_key_is_refused() -> None:
    keyed = guard(api_keys="key-default")
    keyed.use(Directory(admin_keys={digest(RUNTIME_ADMIN): AdminGrant("key_admin", "old", time.time() - 1)}))
    with pytest.raises(Unauthorized):
        asyncio.run(keyed.admin(bearer(RUNTIME_ADMIN)))


def test_without_keys_configured_a_projects_key_is_still_its_own_and_a_dead_one_refused() -> None:
    open_gateway = guard(admin_api_keys=ADMIN_KEY)
    assert not open_gateway.tenants.keyed
    # Clients send a key they were never given: everyone's, as before.
    for anyone in ("", bearer("not-needed"), "Basic xyz"):
        tenant = asyncio.run(open_gateway.admit(anyone, "10.0.0.1"))
        assert tenant.name == DEFAULT_TENANT and open_gateway.owner(tenant).every
    assert asyncio.run(open_gateway.admit(bearer(PROJECT_KEY), "10.0.0.1")) == replace(PROJECT, key_id="key_live")
    assert not open_gateway.owner(PROJECT).every  # a project sees its own files, not everyone's
    for dead in (EXPIRED_KEY, "sk-proj-deleted"):  # a project's key that no longer works is no one's
        with pytest.raises(Unauthorized):
            asyncio.run(open_gateway.admit(bearer(dead), "10.0.0.1"))
    with pytest.raises(Forbidden):
        asyncio.run(open_gateway.admit(bearer(ADMIN_KEY), "10.0.0.1"))
