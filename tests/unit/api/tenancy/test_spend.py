"""What limited projects spent this month (api/tenancy/spend.py): read from the usage
history for the projects with a limit only, per month; a limit's count made in Redis
from it before the limit is set, never over a count Redis holds; the spend now read
from Redis, or from the history when Redis has none or is away. A SQLite control plane,
Redis faked at the edge (tests/unit/api/edge.py)."""

from __future__ import annotations

import asyncio
import calendar
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.tenancy.spend import MonthSpend
from shared.control.database import engine_for, migrate
from shared.control.models import UsageBucket
from shared.control.store import Actor, ControlStore
from shared.tenants import Tenants
from tests.unit.api.edge import FakeRedis, config

pytestmark = pytest.mark.unit

ADMIN = Actor("key_cfg_0", "test")
NOW = float(calendar.timegm((2026, 12, 7, 12, 0, 0)))
DECEMBER = calendar.timegm((2026, 12, 1, 0, 0, 0))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ControlStore]:
    engine = engine_for(f"sqlite:///{tmp_path}/control.db")
    migrate(engine)
    yield ControlStore(engine, lambda: NOW)
    engine.dispose()


def spent_in_history(store: ControlStore, project: str, cost: int, at: int = DECEMBER) -> None:
    with store._sessions.begin() as session:
        session.add(
            UsageBucket(width="1d", start_time=at, project_id=project, model="m", api_key_id="", batch=False,
                        kind="completions", num_model_requests=1, input_tokens=1, input_cached_tokens=0,
                        output_tokens=1, cost=cost)
        )  # fmt: skip


def test_only_projects_with_a_limit_are_read_and_only_for_their_month(store: ControlStore) -> None:
    limited = store.create_project(ADMIN, "limited").id
    free = store.create_project(ADMIN, "free").id
    store.set_spend_limit(ADMIN, limited, 100, "USD", "month")
    spent_in_history(store, limited, 7_000)
    spent_in_history(store, limited, 1_000_000, at=DECEMBER - 86_400)  # November's
    spent_in_history(store, free, 9_000)
    tenants = Tenants(runtime=store.directory(9))
    month = MonthSpend(config(), store, tenants, FakeRedis(), clock=lambda: NOW)  # type: ignore[arg-type]
    assert month(limited, "2026-12") == 0  # nothing read yet
    asyncio.run(month.refresh())
    assert month.limited() == [limited]
    assert month(limited, "2026-12") == 7_000 and month(free, "2026-12") == 0
    assert month(limited, "2027-01") == 0  # a month not read starts from nothing
    # No project with a limit: nothing read at all.
    store.delete_spend_limit(ADMIN, limited)
    tenants.runtime = store.directory(9)
    asyncio.run(month.refresh())
    assert month(limited, "2026-12") == 0


def test_a_limits_count_starts_from_the_history_unless_redis_holds_one(store: ControlStore) -> None:
    project = store.create_project(ADMIN, "p").id
    spent_in_history(store, project, 42_000)
    redis = FakeRedis()
    month = MonthSpend(config(), store, Tenants(), redis, clock=lambda: NOW)  # type: ignore[arg-type]
    key = config().keys.spend(project, "2026-12")
    asyncio.run(month.start_counting(project))
    assert redis.strings[key] == b"42000"
    redis.strings[key] = b"50000"  # counted since: a limit set again does not undo it
    asyncio.run(month.start_counting(project))
    assert redis.strings[key] == b"50000"
    assert asyncio.run(month.spent_now(project)) == 50_000
    del redis.strings[key]  # Redis lost it: the history says
    assert asyncio.run(month.spent_now(project)) == 42_000
    redis.down = True
    assert asyncio.run(month.spent_now(project)) == 42_000
    asyncio.run(month.start_counting(project))  # Redis away: said, not raised (admissions fail meanwhile)
