"""What the routes read of the request itself, as FastAPI dependencies: its tenant, and
whose files and batches it sees, which the route class put on the request once its
key was checked (api/http/route_class.py). Every other part a route uses is handed to
its router when the router is made (api/main.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from shared.tenants import DEFAULT_TENANT, EVERYONE, Owner, Tenant


async def _tenant(request: Request) -> Tenant:
    # Coroutines: FastAPI runs a plain function's dependency on its thread pool, a thread
    # hop per dependency per request.
    return getattr(request.state, "tenant", None) or Tenant(DEFAULT_TENANT)


async def _owner(request: Request) -> Owner:
    return getattr(request.state, "owner", EVERYONE)


TenantDep = Annotated[Tenant, Depends(_tenant)]
OwnerDep = Annotated[Owner, Depends(_owner)]
