"""What the routes read of the request itself, as FastAPI dependencies: its tenant, and
whose files and batches it sees (or, on /v1/organization/*, its admin API key), which
the route class put on the request once its key was checked (api/http/route_class.py),
and its timing, which the route class made for it and reads back. Every other part a route uses is handed to
its router when the router is made (api/main.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request

from api.errors import NotFound
from api.observability.server_timing import Timing
from shared.tenants import DEFAULT_TENANT, EVERYONE, TENANT_PATTERN, AdminGrant, Owner, Tenant, job_key


async def _tenant(request: Request) -> Tenant:
    # Coroutines: FastAPI runs a plain function's dependency on its thread pool, a thread
    # hop per dependency per request.
    return getattr(request.state, "tenant", None) or Tenant(DEFAULT_TENANT)


async def _owner(request: Request) -> Owner:
    return getattr(request.state, "owner", EVERYONE)


async def _timing(request: Request) -> Timing:
    return request.state.timing


async def _admin(request: Request) -> AdminGrant:
    return request.state.admin


TenantDep = Annotated[Tenant, Depends(_tenant)]
OwnerDep = Annotated[Owner, Depends(_owner)]
# The request's Server-Timing, which the endpoint tells of the job it ran (Timing.ran).
TimingDep = Annotated[Timing, Depends(_timing)]
# The admin API key of a request to /v1/organization/* (Access.ADMIN): who the audit log says acted.
AdminDep = Annotated[AdminGrant, Depends(_admin)]


# An admin key's `?tenant=`: another tenant's job (or response) by its id.
Whose = Annotated[
    str | None,
    Query(
        alias="tenant", pattern=TENANT_PATTERN, description="whose job (admin keys): another tenant's; the key's own"
    ),
]


def whose_key(job_id: str, mine: Tenant, whose: str | None, missing: NotFound) -> str:
    """The key of the job `job_id`: of the key's tenant, or of `whose` for an admin key
    (any other key naming another tenant finds nothing: `missing`, as for an unknown id)."""
    if whose is None or whose == mine.name:
        return job_key(mine.name, job_id)
    if not mine.admin:
        raise missing
    return job_key(whose, job_id)
