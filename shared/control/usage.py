"""Usage history in the control plane's database: the `usage_buckets` rows behind the
Administration API's usage and costs (api/admin/usage.py).

The workers count each answered job in Redis, per UTC minute (`Keys.usage_buckets`); an
API process moves each finished minute here (api/admin/usage_flush.py) with `record`:
its "1m" rows, written as the minute's totals (a minute recorded twice is counted once:
an upsert on the rows' unique constraint), then the "1h" row of its hour summed again
from that hour's minutes, and the "1d" row of its day from that day's hours, in the same
transaction. So the rows of every width always agree with the minutes recorded. A
key's `last_used_at` is the start of the latest minute recorded with its usage.

Kept: "1m" rows `KEPT["1m"]` seconds, "1h" rows about a month, "1d" rows 13 months
(`sweep`). Calls block (SQLAlchemy's synchronous engine): the API runs them on a thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import astuple, dataclass, fields
from typing import Any

from sqlalchemy import Engine, and_, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from shared.control.models import ProjectKey, UsageBucket

WIDTHS = {"1m": 60, "1h": 3600, "1d": 86_400}
# Seconds each width's rows are kept, by their start: minutes a few days, hours about a
# month, days 13 months (and a few days more, so a year ago's month is whole).
KEPT = {"1m": 3 * 86_400, "1h": 35 * 86_400, "1d": 400 * 86_400}
# What a bucket is of, and what it counts (the table's columns of each).
GROUPS = ("project_id", "model", "api_key_id", "batch", "kind")
COUNTS = ("num_model_requests", "input_tokens", "input_cached_tokens", "output_tokens", "cost")
KINDS = ("completions", "embeddings")
ROWS_PER_INSERT = 500  # rows of one INSERT (SQLite takes at most 32766 parameters)


@dataclass(frozen=True)
class Usage:
    """One bucket's usage of one project, model, key ("" for a key without an id), batch
    or not, and kind: its requests answered, their tokens (input counts the cached ones
    too), and their cost in nano-USD."""

    start_time: int
    project_id: str
    model: str
    api_key_id: str
    batch: bool
    kind: str
    num_model_requests: int = 0
    input_tokens: int = 0
    input_cached_tokens: int = 0
    output_tokens: int = 0
    cost: int = 0

    def group(self) -> tuple[str, str, str, bool, str]:
        return self.project_id, self.model, self.api_key_id, self.batch, self.kind

    def counts(self) -> tuple[int, int, int, int, int]:
        return self.num_model_requests, self.input_tokens, self.input_cached_tokens, self.output_tokens, self.cost


@dataclass(frozen=True)
class UsageFilter:
    """Which rows a read holds (each one given must match; empty or None: any)."""

    kinds: Sequence[str] = KINDS
    project_ids: Sequence[str] = ()
    models: Sequence[str] = ()
    api_key_ids: Sequence[str] = ()
    batch: bool | None = None

    def matches(self, usage: Usage) -> bool:
        """Whether `usage` is one of the rows this filter reads (for minutes read from Redis)."""
        return (
            usage.kind in self.kinds
            and (not self.project_ids or usage.project_id in self.project_ids)
            and (not self.models or usage.model in self.models)
            and (not self.api_key_ids or usage.api_key_id in self.api_key_ids)
            and (self.batch is None or usage.batch == self.batch)
        )

    def where(self) -> list[Any]:
        table = UsageBucket
        clauses: list[Any] = [table.kind.in_(list(self.kinds))]
        if self.project_ids:
            clauses.append(table.project_id.in_(list(self.project_ids)))
        if self.models:
            clauses.append(table.model.in_(list(self.models)))
        if self.api_key_ids:
            clauses.append(table.api_key_id.in_(list(self.api_key_ids)))
        if self.batch is not None:
            clauses.append(table.batch.is_(self.batch))
        return clauses


def summed(rows: Iterable[Usage], start_time: int) -> list[Usage]:
    """`rows` added up by what they are of, as rows of the bucket starting at `start_time`."""
    totals: dict[tuple[str, str, str, bool, str], list[int]] = {}
    for row in rows:
        total = totals.setdefault(row.group(), [0] * len(COUNTS))
        for index, count in enumerate(row.counts()):
            total[index] += count
    return [Usage(start_time, *group, *counts) for group, counts in sorted(totals.items())]


class UsageHistory:
    """The `usage_buckets` table, as the API writes and reads it."""

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self._clock = clock

    def record(self, minutes: Sequence[Usage]) -> None:
        """Write `minutes` (rows of finished minutes, each its minute's total) as "1m"
        rows, replacing those of the same bucket; sum their hours and days again; and
        mark each key's last use. One transaction: all of it, or nothing."""
        if not minutes:
            return
        with self.engine.begin() as connection:
            _upsert(connection, "1m", minutes)
            hours = sorted({row.start_time // 3600 * 3600 for row in minutes})
            for hour in hours:
                _upsert(connection, "1h", summed(_rows(connection, "1m", hour, hour + 3600), hour))
            for day in sorted({hour // 86_400 * 86_400 for hour in hours}):
                _upsert(connection, "1d", summed(_rows(connection, "1h", day, day + 86_400), day))
            last_used: dict[str, int] = {}
            for row in minutes:
                if row.api_key_id and row.num_model_requests:
                    last_used[row.api_key_id] = max(last_used.get(row.api_key_id, 0), row.start_time)
            for key_id, used_at in sorted(last_used.items()):
                connection.execute(
                    update(ProjectKey)
                    .where(ProjectKey.id == key_id)
                    .where(or_(ProjectKey.last_used_at.is_(None), ProjectKey.last_used_at < used_at))
                    .values(last_used_at=used_at)
                )

    def sweep(self) -> int:
        """Delete the rows older than their width is kept (`KEPT`); the number deleted."""
        now = int(self._clock())
        removed = 0
        with self.engine.begin() as connection:
            for width, seconds in KEPT.items():
                done = connection.execute(
                    delete(UsageBucket).where(UsageBucket.width == width, UsageBucket.start_time < now - seconds)
                )
                removed += done.rowcount or 0
        return removed

    def read(
        self, width: str, start: int, end: int, chosen: UsageFilter, minutes_from: int
    ) -> tuple[list[Usage], set[int]]:
        """The rows of `width` starting in [`start`, `end`) that `chosen` holds, and the
        minutes from `minutes_from` (until `end`) that are recorded here, whatever their
        rows: read in one statement (one snapshot), so a minute is either among both or
        in neither, however the recording goes on meanwhile."""
        table = UsageBucket
        wanted = and_(table.width == width, table.start_time >= start, table.start_time < end, *chosen.where())
        recorded = and_(table.width == "1m", table.start_time >= minutes_from, table.start_time < end)
        query = select(table.width, *(getattr(table, name) for name in ("start_time", *GROUPS, *COUNTS))).where(
            or_(wanted, recorded)
        )
        rows: list[Usage] = []
        minutes: set[int] = set()
        with self.engine.begin() as connection:
            for found_width, *values in connection.execute(query):
                row = Usage(*values)
                if found_width == "1m" and row.start_time >= minutes_from:
                    minutes.add(row.start_time)
                if found_width == width and start <= row.start_time < end and chosen.matches(row):
                    rows.append(row)
        return rows, minutes


def _rows(connection: Connection, width: str, start: int, end: int) -> list[Usage]:
    table = UsageBucket
    query = select(*(getattr(table, name) for name in ("start_time", *GROUPS, *COUNTS))).where(
        table.width == width, table.start_time >= start, table.start_time < end
    )
    return [Usage(*values) for values in connection.execute(query)]


def _upsert(connection: Connection, width: str, rows: Sequence[Usage]) -> None:
    """Insert `rows` as rows of `width`, or set the counts of those already there (the
    bucket's unique constraint: the same width, start, project, model, key, batch, kind)."""
    if not rows:
        return
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    names = [field.name for field in fields(Usage)]
    for first in range(0, len(rows), ROWS_PER_INSERT):
        values = [
            {"width": width, **dict(zip(names, astuple(row), strict=True))}
            for row in rows[first : first + ROWS_PER_INSERT]
        ]
        insert = dialect.insert(UsageBucket).values(values)
        connection.execute(
            insert.on_conflict_do_update(
                index_elements=["width", "start_time", *GROUPS],
                set_={name: insert.excluded[name] for name in COUNTS},
            )
        )


def totals(rows: Iterable[Usage]) -> dict[str, int]:
    """The counts of `rows` added up, by column name."""
    added = dict.fromkeys(COUNTS, 0)
    for row in rows:
        for name, count in zip(COUNTS, row.counts(), strict=True):
            added[name] += count
    return added
