"""What tenants used, per UTC day and model: their jobs and the model server's tokens.

Counted by the workers as each job's first result is stored (tasks/result_store.py),
in one Redis hash per day (`Keys.usage`), kept ``USAGE_DAYS``.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from api.errors import ResultStoreUnavailable
from shared.config import Config
from shared.contract.keys import usage_field

COUNTS = ("jobs", "failed", "prompt_tokens", "completion_tokens")


async def usage(
    config: Config, store: aioredis.Redis, start: date, end: date, tenants: set[str] | None
) -> list[dict[str, Any]]:
    """Each day's usage from `start` to `end` (UTC days, both included), per tenant and
    model, of `tenants` (None: all), in the order of day, tenant and model."""
    days = [start + timedelta(days=n) for n in range(max(0, (end - start).days + 1))]
    try:
        async with store.pipeline(transaction=False) as pipe:
            for day in days:
                pipe.hgetall(config.keys.usage(day.isoformat()))
            found = await pipe.execute()
    except (RedisError, OSError):
        raise ResultStoreUnavailable("result store (Redis) unavailable") from None
    rows: list[dict[str, Any]] = []
    for day, counts in zip(days, found, strict=True):
        by_pair: dict[tuple[str, str], dict[str, int]] = {}
        for raw_field, raw_value in counts.items():
            tenant, model, count = usage_field(raw_field.decode())
            if count not in COUNTS or (tenants is not None and tenant not in tenants):
                continue
            by_pair.setdefault((tenant, model), dict.fromkeys(COUNTS, 0))[count] = int(raw_value)
        for (tenant, model), row in sorted(by_pair.items()):
            total = row["prompt_tokens"] + row["completion_tokens"]
            rows.append({"date": day.isoformat(), "tenant": tenant, "model": model, **row, "total_tokens": total})
    return rows
