"""``GET /tenants``: the tenants of the keys file as a key may see them (read-only), and
who the key is. The console signs in with it, and shows it under "Projects and keys" to
every key but an admin API key (which this endpoint refuses, and which reads the
control plane's projects, ``/v1/organization/projects``); never a key, only how many
each tenant has."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.routing import APIRoute

from api.deps import TenantDep
from shared.tenants import DEFAULT_TENANT, Tenant, Tenants


def _shown(tenant: Tenant, keys: int) -> dict[str, Any]:
    return {"name": tenant.name, "admin": tenant.admin, "weight": tenant.weight, "keys": keys,
            "quotas": tenant.quotas.model_dump(), "source": "keys_file"}  # fmt: skip


def tenants_router(tenants: Tenants, route_class: type[APIRoute]) -> APIRouter:
    """The tenants of `tenants`, as the guard reads them."""
    router = APIRouter(tags=["usage"], route_class=route_class)
    counts: dict[str, int] = {}
    for tenant in tenants.by_digest.values():
        counts[tenant.name] = counts.get(tenant.name, 0) + 1

    @router.get("/tenants")
    async def list_tenants(mine: TenantDep) -> dict[str, Any]:
        """The key's tenant, whether it is an admin's, and the tenants it sees: its own; an
        admin key every tenant with keys (without keys configured, the one tenant
        everyone is). Each with its weight, quotas and number of keys."""
        everyone = mine.admin or not tenants.keyed
        if not tenants.keyed:
            shown = [tenants.get(DEFAULT_TENANT)]
        elif everyone:
            shown = sorted((tenants.named[name] for name in counts), key=lambda tenant: tenant.name)
        else:
            shown = [mine]
        return {"object": "list", "tenant": mine.name, "admin": everyone, "keyed": tenants.keyed,
                "data": [_shown(tenant, counts.get(tenant.name, 0)) for tenant in shown]}  # fmt: skip

    return router
