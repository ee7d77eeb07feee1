"""Dead letters for admins: ``GET /dead_letters`` (the jobs that failed for good, and the
messages no worker could process, oldest first) and ``POST /dead_letters/replay`` (put
jobs back in their queue, by name). The same listing and replay as ``python -m tasks.dead_letters``
(shared/broker/dead_letters.py); admin keys only: a dead letter holds its job's request,
and replaying acts."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Query
from fastapi.routing import APIRoute
from kombu.exceptions import OperationalError
from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import RedisError

from api.errors import BrokerUnavailable, ResultStoreUnavailable
from shared.broker.dead_letters import Replayed, list_dead, replay
from shared.config import Config
from shared.tenants import tenant_of

T = TypeVar("T")


class Replay(BaseModel):
    """Body of ``POST /dead_letters/replay``: the jobs to put back, by name (every one at
    once is the command line's ``replay --all``: an admin replays what was listed)."""

    model_config = ConfigDict(extra="forbid")

    # Compared with the dead letters' ids only: any text names at most one.
    job_ids: list[Annotated[str, Field(min_length=1, max_length=300)]] = Field(
        min_length=1, max_length=1000, description="the dead letters' job_id, as GET /dead_letters names them"
    )


async def off_the_loop(config: Config, work: Callable[[], T]) -> T:
    """`work` (kombu's and redis-py's blocking clients) on a thread, never on the event
    loop; a broker or Redis that does not answer is its GatewayError (503, named)."""
    try:
        return await asyncio.get_running_loop().run_in_executor(None, work)
    except RedisError:
        raise ResultStoreUnavailable("result store (Redis) unavailable: no dead letter was replayed") from None
    except (OperationalError, OSError):
        raise BrokerUnavailable(f"broker ({config.broker_name}) unavailable: dead letters cannot be read") from None


def listed(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The dead letters as listed: each with its job's tenant (its id's prefix)."""
    return [{**entry, "tenant": tenant_of(entry["job_id"]) if entry.get("job_id") else None} for entry in found]


def replayed(chosen: set[str], done: Replayed) -> dict[str, Any]:
    """What a replay did, and the ids asked for that were no dead letter."""
    missing = sorted(chosen - set(done.replayed) - set(done.skipped))
    return {"replayed": done.replayed, "skipped": done.skipped, "missing": missing}


def dead_letters_router(config: Config, route_class: type[APIRoute]) -> APIRouter:
    """The dead-letter queue of `config`'s deployment, for admin keys."""
    router = APIRouter(tags=["operations"], route_class=route_class)

    @router.get("/dead_letters", responses={503: {"description": "The broker is unavailable; named"}})
    async def dead_letters(
        limit: Annotated[int, Query(ge=1, le=1000, description="the most listed, oldest first")] = 100,
    ) -> dict[str, Any]:
        """The dead letters, oldest first: each job's id (its tenant's prefix kept: what
        replay takes), its tenant, task, why it died and when, and its arguments as the
        worker logged them."""
        found = await off_the_loop(config, lambda: list_dead(config, limit))
        return {"object": "list", "data": listed(found)}

    @router.post("/dead_letters/replay", responses={503: {"description": "The broker or Redis is unavailable"}})
    async def replay_dead_letters(body: Replay) -> dict[str, Any]:
        """Put the dead jobs named back in the queue under the same id, their failure
        forgotten; a job answered or cancelled since it died is skipped, with why, and its
        dead letter removed. Ids not among the dead letters are named as missing."""
        chosen = set(body.job_ids)
        return replayed(chosen, await off_the_loop(config, lambda: replay(config, chosen)))

    return router
