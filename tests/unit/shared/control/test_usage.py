"""Usage history on a SQLite file: minutes recorded twice counted once, their hours and
days summed from them, keys' last use, what a read holds, and the sweep of old rows.
(The same on PostgreSQL: tests/integration/api/test_organization_usage.py.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from shared.control.database import engine_for, migrate
from shared.control.models import ProjectKey, UsageBucket
from shared.control.store import Actor, ControlStore
from shared.control.usage import KEPT, Usage, UsageFilter, UsageHistory, summed, totals

pytestmark = pytest.mark.unit

ADMIN = Actor("key_cfg_0123456789abcdef", "test")
DAY = 1_800_057_600  # a UTC day's start
HOUR = DAY + 5 * 3600


class Clock:
    def __init__(self) -> None:
        self.now = float(DAY + 86_400)

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def control(tmp_path: Path, clock: Clock) -> Iterator[tuple[ControlStore, UsageHistory]]:
    engine = engine_for(f"sqlite:///{tmp_path}/control.db")
    migrate(engine)
    yield ControlStore(engine, clock), UsageHistory(engine, clock)
    engine.dispose()


def used(start: int, project: str = "proj_a", model: str = "m", key: str = "", batch: bool = False,
         kind: str = "completions", requests: int = 1, tokens: tuple[int, int, int] = (10, 2, 5),
         cost: int = 100) -> Usage:  # fmt: skip
    return Usage(start, project, model, key, batch, kind, requests, *tokens, cost)


def rows(history: UsageHistory, width: str) -> list[Usage]:
    found, _ = history.read(width, 0, 2**40, UsageFilter(), 2**40)
    return sorted(found, key=lambda row: (row.start_time, row.group()))


def test_a_minute_recorded_twice_is_counted_once_and_its_hour_and_day_are_its_sums(
    control: tuple[ControlStore, UsageHistory],
) -> None:
    _, history = control
    first = [used(HOUR), used(HOUR, model="n", tokens=(3, 0, 1), cost=7)]
    history.record(first)
    history.record(first)  # a flush run again (a cursor lost with Redis): the same totals
    assert rows(history, "1m") == first
    # A later minute of the same hour, and one of the next hour: each hour and the day summed again.
    history.record([used(HOUR + 60, requests=2, tokens=(20, 4, 10), cost=200), used(HOUR + 3600, project="proj_b")])
    assert rows(history, "1h") == [
        used(HOUR, requests=3, tokens=(30, 6, 15), cost=300),
        used(HOUR, model="n", tokens=(3, 0, 1), cost=7),
        used(HOUR + 3600, project="proj_b"),
    ]
    assert rows(history, "1d") == [
        used(DAY, requests=3, tokens=(30, 6, 15), cost=300),
        used(DAY, model="n", tokens=(3, 0, 1), cost=7),
        used(DAY, project="proj_b"),
    ]
    # A minute recorded again with more (a job stored late in it): its new totals replace its old.
    history.record([used(HOUR, requests=2, tokens=(11, 2, 6), cost=150)])
    assert totals(rows(history, "1d")) == totals(rows(history, "1m")) == totals(rows(history, "1h"))
    assert totals(rows(history, "1d"))["num_model_requests"] == 6


def test_each_bucket_is_its_own_row_by_project_model_key_batch_and_kind(
    control: tuple[ControlStore, UsageHistory],
) -> None:
    _, history = control
    kinds = [used(HOUR, key="key_1"), used(HOUR, key="key_2"), used(HOUR, batch=True),
             used(HOUR, kind="embeddings", tokens=(4, 0, 0)), used(HOUR, project="tenant-a")]  # fmt: skip
    history.record(kinds)
    assert len(rows(history, "1m")) == len(rows(history, "1h")) == len(rows(history, "1d")) == 5


def test_a_keys_last_use_is_the_latest_minute_recorded_with_its_usage(
    control: tuple[ControlStore, UsageHistory],
) -> None:
    store, history = control
    project = store.create_project(ADMIN, "p")
    made = store.create_service_account(ADMIN, project.id, "bot", True, None)
    assert made.key is not None
    key_id = made.key.id
    history.record([used(HOUR + 120, key=key_id), used(HOUR + 60, key=key_id), used(HOUR, key="key_unknown")])
    history.record([used(HOUR, key=key_id)])  # an earlier minute recorded again: not the last use
    with history.engine.begin() as connection:
        assert connection.execute(select(ProjectKey.last_used_at).where(ProjectKey.id == key_id)).scalar() == HOUR + 120
    assert store.keys(project.id, None, 10)[1].items[0].last_used_at == HOUR + 120


def test_a_read_holds_the_rows_filtered_and_says_which_recent_minutes_are_recorded(
    control: tuple[ControlStore, UsageHistory],
) -> None:
    _, history = control
    history.record([used(HOUR, key="key_1"), used(HOUR + 60, project="proj_b", batch=True),
                    used(HOUR + 120, model="n", kind="embeddings")])  # fmt: skip
    found, minutes = history.read("1m", HOUR, HOUR + 180, UsageFilter(project_ids=("proj_a",)), HOUR + 60)
    assert [row.start_time for row in found] == [HOUR, HOUR + 120]
    # Minutes from HOUR + 60 recorded, whatever the filter holds of them.
    assert minutes == {HOUR + 60, HOUR + 120}
    chosen = UsageFilter(kinds=("completions",), api_key_ids=("key_1",))
    assert [row.api_key_id for row in history.read("1h", HOUR, HOUR + 3600, chosen, HOUR + 3600)[0]] == ["key_1"]
    assert history.read("1d", DAY, DAY + 86_400, UsageFilter(batch=True), DAY + 86_400)[0][0].project_id == "proj_b"
    assert history.read("1d", DAY, DAY + 86_400, UsageFilter(models=("nothing",)), DAY + 86_400)[0] == []
    assert UsageFilter(batch=False).matches(used(HOUR)) and not UsageFilter(batch=True).matches(used(HOUR))


def test_the_sweep_deletes_each_width_past_its_keeping(
    control: tuple[ControlStore, UsageHistory], clock: Clock
) -> None:
    _, history = control
    history.record([used(HOUR)])
    clock.now = HOUR + KEPT["1m"] + 1  # minutes go first, their hour and day stay
    assert history.sweep() == 1
    assert (rows(history, "1m"), len(rows(history, "1h")), len(rows(history, "1d"))) == ([], 1, 1)
    clock.now = HOUR + KEPT["1h"] + 1
    assert history.sweep() == 1 and len(rows(history, "1d")) == 1
    clock.now = DAY + KEPT["1d"] + 1  # 13 months on
    assert history.sweep() == 1
    with history.engine.begin() as connection:
        assert connection.execute(select(UsageBucket)).first() is None


def test_rows_are_summed_by_what_they_are_of() -> None:
    assert summed([used(60), used(120), used(60, model="n")], 0) == [used(0, requests=2, tokens=(20, 4, 10), cost=200),
                                                                    used(0, model="n")]  # fmt: skip
