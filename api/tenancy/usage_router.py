"""The usage resource: ``GET /usage``, a tenant's jobs and tokens per day and model."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

import redis.asyncio as aioredis
from fastapi import APIRouter, Query
from fastapi.routing import APIRoute

from api.deps import TenantDep
from api.errors import Forbidden, InvalidInput
from api.tenancy.usage import usage
from shared.config import Config
from shared.tenants import TENANT_PATTERN, Tenants


def _day(name: str, given: str | None) -> date | None:
    try:
        return date.fromisoformat(given) if given is not None else None
    except ValueError:
        raise InvalidInput(f"{name}: {given!r} is not a day (YYYY-MM-DD)") from None


def usage_router(config: Config, tenants: Tenants, redis: aioredis.Redis, route_class: type[APIRoute]) -> APIRouter:
    """Usage, as the workers counted it in Redis, for the keys of `tenants`."""
    router = APIRouter(tags=["usage"], route_class=route_class)

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
    ) -> dict[str, Any]:
        """Jobs answered and failed, and prompt and completion tokens as the model server
        counted them, per UTC day and model: the key's tenant's, or with an admin key every
        tenant's (or `tenant`'s); a range with no day (start after end) has nothing."""
        last = _day("end", end) or datetime.now(UTC).date()
        # Days before those kept hold nothing: not read. A start after the end is no day.
        if (last - date.min).days < config.usage_days:
            raise InvalidInput(f"end: {end!r} is earlier than any day usage is kept for")
        kept = last - timedelta(days=config.usage_days - 1)
        first = max(_day("start", start) or last - timedelta(days=min(6, config.usage_days - 1)), kept)
        everyone = mine.admin or not tenants.keyed
        if tenant is not None and tenant != mine.name and not everyone:
            raise Forbidden(f"tenant {mine.name!r} sees its own usage only; another tenant's needs an admin key")
        chosen = {tenant} if tenant is not None else (None if everyone else {mine.name})
        rows = await usage(config, redis, first, last, chosen)
        return {"object": "list", "start": first.isoformat(), "end": last.isoformat(), "data": rows}

    return router
