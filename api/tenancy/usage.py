"""What tenants used, per UTC day or minute and model: their jobs and the model server's tokens.

Counted by the workers as each job's first result is stored (tasks/result_store.py),
in one Redis hash per day (`Keys.usage`), kept ``USAGE_DAYS``, and one per minute
(`Keys.usage_of_minute`), kept two hours.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from api.errors import ResultStoreUnavailable
from shared.contract.keys import usage_field

COUNTS = ("jobs", "failed", "prompt_tokens", "completion_tokens")


async def usage(
    store: aioredis.Redis, buckets: list[tuple[str, str]], tenants: set[str] | None, named: str = "date"
) -> list[dict[str, Any]]:
    """The usage of each of `buckets` (its name, its hash's key), in their order, per tenant
    and model, of `tenants` (None: all); each row names its bucket as `named`."""
    try:
        async with store.pipeline(transaction=False) as pipe:
            for _, key in buckets:
                pipe.hgetall(key)
            found = await pipe.execute()
    except (RedisError, OSError):
        raise ResultStoreUnavailable("result store (Redis) unavailable") from None
    rows: list[dict[str, Any]] = []
    for (bucket, _), counts in zip(buckets, found, strict=True):
        by_pair: dict[tuple[str, str], dict[str, int]] = {}
        for raw_field, raw_value in counts.items():
            tenant, model, count = usage_field(raw_field.decode())
            if count not in COUNTS or (tenants is not None and tenant not in tenants):
                continue
            by_pair.setdefault((tenant, model), dict.fromkeys(COUNTS, 0))[count] = int(raw_value)
        for (tenant, model), row in sorted(by_pair.items()):
            total = row["prompt_tokens"] + row["completion_tokens"]
            rows.append({named: bucket, "tenant": tenant, "model": model, **row, "total_tokens": total})
    return rows
