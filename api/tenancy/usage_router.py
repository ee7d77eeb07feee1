"""The usage resource: ``GET /usage``, a tenant's jobs and tokens per day (or minute) and model."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal

import redis.asyncio as aioredis
from fastapi import APIRouter, Query
from fastapi.routing import APIRoute

from api.deps import TenantDep
from api.errors import Forbidden, InvalidInput
from api.tenancy.usage import usage
from shared.config import Config
from shared.contract.keys import USAGE_MINUTES, usage_minute
from shared.tenants import TENANT_PATTERN, Tenant, Tenants


def _day(name: str, given: str | None) -> date | None:
    try:
        return date.fromisoformat(given) if given is not None else None
    except ValueError:
        raise InvalidInput(f"{name}: {given!r} is not a day (YYYY-MM-DD)") from None


def _chosen(mine: Tenant, tenants: Tenants, tenant: str | None) -> set[str] | None:
    """Whose usage the key reads: its tenant's; an admin's (or anyone's without keys) every
    tenant's, or `tenant`'s; another key naming another tenant is refused."""
    everyone = mine.admin or not tenants.keyed
    if tenant is not None and tenant != mine.name and not everyone:
        raise Forbidden(f"tenant {mine.name!r} sees its own usage only; another tenant's needs an admin key")
    return {tenant} if tenant is not None else (None if everyone else {mine.name})


def usage_router(config: Config, tenants: Tenants, redis: aioredis.Redis, route_class: type[APIRoute]) -> APIRouter:
    """Usage, as the workers counted it in Redis, for the keys of `tenants`."""
    router = APIRouter(tags=["usage"], route_class=route_class)
    keys = config.keys

    @router.get("/usage")
    async def get_usage(
        mine: TenantDep,
        start: Annotated[
            str | None,
            Query(
                json_schema_extra={"format": "date"},
                description="first UTC day (YYYY-MM-DD); 6 days before end; at most USAGE_DAYS before it",
            ),
        ] = None,
        end: Annotated[
            str | None,
            Query(json_schema_extra={"format": "date"}, description="last UTC day (YYYY-MM-DD), included; today"),
        ] = None,
        tenant: Annotated[str | None, Query(pattern=TENANT_PATTERN, description="an admin's choice of tenant")] = None,
        per: Annotated[
            Literal["day", "minute"],
            Query(description="'minute': the last 60 UTC minutes, the current one last (no start or end)"),
        ] = "day",
    ) -> dict[str, Any]:
        """Jobs answered and failed, and prompt and completion tokens as the model server
        counted them, per UTC day and model: the key's tenant's, or with an admin key every
        tenant's (or `tenant`'s); a range with no day (start after end) has nothing. With
        ``per=minute``, per UTC minute of the last hour instead."""
        chosen = _chosen(mine, tenants, tenant)
        if per == "minute":
            if start is not None or end is not None:
                raise InvalidInput("per=minute answers the last 60 minutes: start and end are days, for per=day")
            now = time.time()
            minutes = [usage_minute(now - 60 * back) for back in reversed(range(USAGE_MINUTES))]
            rows = await usage(redis, [(m, keys.usage_of_minute(m)) for m in minutes], chosen, named="minute")
            return {"object": "list", "per": "minute", "start": minutes[0], "end": minutes[-1], "data": rows}
        last = _day("end", end) or datetime.now(UTC).date()
        # Days before those kept hold nothing: not read. A start after the end is no day.
        if (last - date.min).days < config.usage_days:
            raise InvalidInput(f"end: {end!r} is earlier than any day usage is kept for")
        kept = last - timedelta(days=config.usage_days - 1)
        first = max(_day("start", start) or last - timedelta(days=min(6, config.usage_days - 1)), kept)
        days = [(first + timedelta(days=n)).isoformat() for n in range(max(0, (last - first).days + 1))]
        rows = await usage(redis, [(day, keys.usage(day)) for day in days], chosen)
        return {"object": "list", "per": "day", "start": first.isoformat(), "end": last.isoformat(), "data": rows}

    return router
