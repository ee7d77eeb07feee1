"""``GET /tenants`` (api/tenancy/tenants_router.py): who a key is, its own tenant, an
admin's every tenant with keys; how many keys, never one."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fastapi.routing import APIRoute

from api.tenancy.tenants_router import tenants_router
from shared.tenants import Quotas, Tenant, Tenants, load_tenants

pytestmark = pytest.mark.unit

FILE = """
tenants:
  - {name: beta, keys: [beta-1, beta-2], weight: 3, quotas: {requests_per_minute: 60}}
  - {name: alpha, keys: [alpha-1]}
  - {name: ops, keys: [ops-1], admin: true}
"""


def endpoint(tenants: Tenants) -> Any:
    (route,) = tenants_router(tenants, APIRoute).routes  # type: ignore[arg-type]
    return route.endpoint  # type: ignore[attr-defined]


def test_a_key_sees_its_own_tenant_and_an_admin_every_tenant_with_keys(tmp_path: Any) -> None:
    keys_file = tmp_path / "tenants.yaml"
    keys_file.write_text(FILE)
    tenants = load_tenants("", str(keys_file), max_priority=6)
    listing = endpoint(tenants)
    mine = asyncio.run(listing(tenants.named["beta"]))
    assert (mine["tenant"], mine["admin"], mine["keyed"]) == ("beta", False, True)
    (beta,) = mine["data"]
    assert beta == {"name": "beta", "admin": False, "weight": 3.0, "keys": 2, "source": "keys_file",
                    "quotas": Quotas(requests_per_minute=60, max_priority=6).model_dump()}  # fmt: skip
    every = asyncio.run(listing(tenants.named["ops"]))
    assert every["admin"] is True
    # The default tenant has no key here: not listed.
    assert [(t["name"], t["keys"]) for t in every["data"]] == [("alpha", 1), ("beta", 2), ("ops", 1)]
    assert "beta-1" not in repr(every) and "alpha-1" not in repr(every)


def test_without_keys_everyone_is_the_one_tenant_and_sees_everything() -> None:
    answer = asyncio.run(endpoint(Tenants(named={"default": Tenant("default")}))(Tenant("default")))
    assert (answer["tenant"], answer["admin"], answer["keyed"]) == ("default", True, False)
    assert [(t["name"], t["keys"]) for t in answer["data"]] == [("default", 0)]
