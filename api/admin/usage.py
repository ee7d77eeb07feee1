"""The Administration API's usage and costs (``/v1/organization/usage/completions``,
``/usage/embeddings``, ``/costs``), in OpenAI's shapes: a ``page`` of ``bucket``s, each
with its results, grouped and filtered as asked.

What they answer is the database's history (shared/control/usage.py), plus the minutes
not yet recorded there, read from Redis (api/admin/usage_flush.py): a request answered a
second ago is counted already. Buckets start at multiples of their width (UTC minutes,
hours, days): a `start_time` inside one starts with that whole bucket.

Costs are the nano-USD counted with each answer at its model's prices then, added up;
by line item (``{model}, input``, ``{model}, cached input``, ``{model}, output``) each
row's cost is shared among them in the proportion of the model's prices now.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from fastapi.exceptions import RequestValidationError
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from starlette.datastructures import QueryParams

from api.admin.usage_flush import KEPT_MINUTES, read_minutes
from api.errors import ControlPlaneUnavailable
from shared.config import Config
from shared.control.usage import WIDTHS, Usage, UsageFilter, UsageHistory
from shared.registry import Prices, Registry

log = logging.getLogger(__name__)

NANO = 1_000_000_000  # nano-USD in a USD


@dataclass(frozen=True)
class Report:
    """One of the three reports: what it counts, how it groups, and its limits on buckets."""

    kinds: tuple[str, ...]
    widths: dict[str, tuple[int, int]]  # bucket width -> (default limit, most)
    groups: tuple[str, ...]  # what group_by takes and the gateway groups by
    inert_groups: tuple[str, ...]  # what group_by takes that holds one value here (no users, ...)
    filters: tuple[str, ...]  # the lists it filters by


COMPLETIONS = Report(
    ("completions",),
    {"1m": (60, 1440), "1h": (24, 168), "1d": (7, 31)},
    ("project_id", "model", "api_key_id", "batch"),
    ("user_id", "service_tier", "api_source"),
    ("project_ids", "models", "api_key_ids", "user_ids"),
)
EMBEDDINGS = Report(
    ("embeddings",),
    COMPLETIONS.widths,
    ("project_id", "model", "api_key_id"),
    ("user_id",),
    ("project_ids", "models", "api_key_ids", "user_ids"),
)
COSTS = Report(
    ("completions", "embeddings"),
    {"1d": (7, 180)},
    ("project_id", "line_item", "api_key_id"),
    ("user_id", "api_source"),
    ("project_ids", "api_key_ids", "line_items"),
)
REPORTS = {"completions": COMPLETIONS, "embeddings": EMBEDDINGS, "costs": COSTS}

LATEST = 2**40  # seconds: later than any time asked of (year 36812)
FILTER_ITEMS = 1000  # values a filter takes at most
PAGE = re.compile(r"^page_([0-9]{1,13})$")
# A parameter's name with brackets (``project_ids[0]``), and the names a report reads.
INDEXED = re.compile(r"^([a-z_]+)\[(.*)\]$")
LISTS = frozenset({"group_by", "project_ids", "models", "api_key_ids", "user_ids", "line_items"})
KNOWN = LISTS | {"start_time", "end_time", "bucket_width", "limit", "page", "batch"}
# Printable text: no control characters, no lone surrogates, no U+FFFD (what a query's
# bytes that are not UTF-8 are read as).
TEXT = re.compile(r"^[^\x00-\x1f\x7f\ud800-\udfff\ufffd]{1,256}$")


@dataclass(frozen=True)
class Asked:
    """A report's query, checked."""

    width: str
    first: int  # the first bucket's start: `start_time` (or the page) rounded down to the width
    end: int  # exclusive
    limit: int
    group_by: tuple[str, ...]
    chosen: UsageFilter
    line_items: tuple[str, ...] = ()
    nobody: bool = False  # filtered by users: the gateway has none, so nothing matches


def _bad(name: str, message: str) -> RequestValidationError:
    """A 400 naming the query parameter at fault (OpenAI's `param`)."""
    return RequestValidationError([{"loc": ("query", name), "msg": message, "type": "value_error"}])


def _one(params: QueryParams, name: str) -> str | None:
    given = params.getlist(name)
    if len(given) > 1:
        raise _bad(name, "given more than once")
    return given[0] if given else None


def _seconds(params: QueryParams, name: str) -> int | None:
    given = _one(params, name)
    if given is None:
        return None
    if not re.fullmatch(r"[0-9]{1,13}", given) or int(given) >= LATEST:
        raise _bad(name, f"{given[:40]!r} is not a time: Unix seconds, 0 or more")
    return int(given)


def _texts(params: QueryParams, name: str) -> list[str]:
    """A list parameter, as the openai SDK sends it (``name[]=a&name[]=b``) or plainly."""
    given = params.getlist(f"{name}[]") + params.getlist(name)
    if len(given) > FILTER_ITEMS:
        raise _bad(name, f"at most {FILTER_ITEMS} values")
    for value in given:
        if not TEXT.fullmatch(value):
            raise _bad(name, "each value is text of 1 to 256 printable characters (UTF-8)")
    return given


def refuse_indexed(params: QueryParams, lists: frozenset[str], singles: frozenset[str]) -> None:
    """A 400 for a known parameter written with brackets it does not take (``project_ids[0]``,
    ``batch[]``): taken for an unknown parameter, a filter written so would be dropped, and
    every project's figures answered as though they were the ones asked for."""
    for name in params:
        written = INDEXED.fullmatch(name)
        if not written or (name == f"{written[1]}[]" and written[1] in lists):
            continue
        given = written[1]
        if given in lists:
            raise _bad(name, f"give a list as {given}[]=a&{given}[]=b, or {given}=a&{given}=b")
        if given in singles:
            raise _bad(name, f"give one value, as {given}=…")


def parse(report: Report, params: QueryParams, now: float) -> Asked:
    """`params` checked as `report` takes them; a 400 naming the parameter at fault."""
    refuse_indexed(params, LISTS, KNOWN - LISTS)
    start = _seconds(params, "start_time")
    if start is None:
        raise _bad("start_time", "required: the range's start, Unix seconds (inclusive)")
    end = _seconds(params, "end_time")
    if end is not None and end <= start:
        raise _bad("end_time", f"{end} is not after start_time ({start})")
    width = _one(params, "bucket_width") or "1d"
    if width not in report.widths:
        raise _bad("bucket_width", f"{width[:40]!r} is not one of {', '.join(report.widths)}")
    seconds = WIDTHS[width]
    default, most = report.widths[width]
    given_limit = _one(params, "limit")
    limit = default
    if given_limit is not None:
        if not re.fullmatch(r"[0-9]{1,9}", given_limit) or not 1 <= int(given_limit) <= most:
            raise _bad("limit", f"{given_limit[:40]!r}: from 1 to {most} buckets of {width}")
        limit = int(given_limit)
    first = start // seconds * seconds
    end = end if end is not None else (int(now) // seconds + 1) * seconds  # to the bucket of now, whole
    page = _one(params, "page")
    if page is not None:
        found = PAGE.fullmatch(page)
        if not found or int(found[1]) % seconds or not first <= int(found[1]) < end:
            raise _bad("page", "not a page of this query: give next_page as an answer gave it")
        first = int(found[1])
    group_by = _texts(params, "group_by")
    for name in group_by:
        if name not in report.groups + report.inert_groups:
            raise _bad("group_by", f"{name[:40]!r} is not one of {', '.join(report.groups + report.inert_groups)}")
    batch = _one(params, "batch")
    if batch is not None and (report is not COMPLETIONS or batch not in ("true", "false")):
        raise _bad("batch", "true (batch jobs only) or false (others only), of usage.completions")
    lists = {name: _texts(params, name) for name in report.filters}
    for name in ("project_ids", "models", "api_key_ids", "user_ids", "line_items"):
        if name not in report.filters and (params.getlist(name) or params.getlist(f"{name}[]")):
            raise _bad(name, "not a filter of this report")
    chosen = UsageFilter(
        report.kinds,
        tuple(lists.get("project_ids", ())),
        tuple(lists.get("models", ())),
        tuple(lists.get("api_key_ids", ())),
        None if batch is None else batch == "true",
    )
    return Asked(
        width, first, end, limit, tuple(dict.fromkeys(group_by)), chosen, tuple(lists.get("line_items", ())),
        nobody=bool(lists.get("user_ids")),
    )  # fmt: skip


class UsageReports:
    """The usage and costs reports, from the database and the minutes Redis holds yet."""

    def __init__(
        self,
        config: Config,
        history: UsageHistory,
        redis: aioredis.Redis,
        registry: Registry,
        clock: Callable[[], float] = time.time,
        call: Callable[..., Awaitable[Any]] = asyncio.to_thread,
    ) -> None:
        """`call(work, *args)` runs a read of the database off the event loop: an API
        process gives its control plane's (`ControlSync.call`: threads of their own, a
        bound on the wait), so a database that hangs holds no thread the rest of the
        process needs and a report is answered 503 in bounded time."""
        self._call = call
        self._keys = config.keys
        self._clock = clock
        self._history = history
        self._redis = redis
        self._prices = {model.name: model.prices for model in registry.models}

    async def report(self, name: str, params: QueryParams) -> dict[str, Any]:
        """The page of buckets `params` asks of report `name` (completions, embeddings, costs)."""
        now = self._clock()
        report = REPORTS[name]
        asked = parse(report, params, now)
        seconds = WIDTHS[asked.width]
        buckets = -(-(asked.end - asked.first) // seconds)  # those of the range from the first, the last maybe partly
        shown = [asked.first + seconds * index for index in range(min(buckets, asked.limit))]
        more = buckets > asked.limit
        if not shown:  # a start after now, and no end: no bucket yet
            return {"object": "page", "data": [], "has_more": False, "next_page": None}
        rows = [] if asked.nobody else await self._rows(asked, shown[0], shown[-1] + seconds, now)
        by_bucket: dict[int, list[Usage]] = {start: [] for start in shown}
        for row in rows:
            by_bucket[row.start_time // seconds * seconds].append(row)
        data = [
            {
                "object": "bucket",
                "start_time": start,
                "end_time": start + seconds,
                "results": self._costs(found, asked) if report is COSTS else _usage(name, found, asked.group_by),
            }
            for start, found in by_bucket.items()
        ]
        next_page = f"page_{shown[-1] + seconds}" if more else None
        return {"object": "page", "data": data, "has_more": more, "next_page": next_page}

    async def _rows(self, asked: Asked, start: int, end: int, now: float) -> list[Usage]:
        """The rows of the buckets from `start` to `end`: the database's, and Redis's of
        the minutes not recorded there yet (each as a row of its minute)."""
        since = max(start, (int(now) // 60 - KEPT_MINUTES + 1) * 60)
        try:
            rows, recorded = await self._call(self._history.read, asked.width, start, end, asked.chosen, since)
        except SQLAlchemyError as exc:
            log.warning("control plane database: %s", exc)
            raise ControlPlaneUnavailable("control plane database unavailable: usage history cannot be read") from None
        pending = [
            minute for minute in range(since // 60, min(end, int(now) + 60) // 60) if minute * 60 not in recorded
        ]
        try:
            recent = await read_minutes(self._redis, self._keys, pending)
        except (RedisError, OSError) as exc:
            # The history alone: the minutes not recorded yet are missing until Redis is back.
            log.warning("usage: the last minutes' usage unread (Redis): %s", exc)
            recent = []
        return rows + [row for row in recent if asked.chosen.matches(row)]

    def _costs(self, rows: Sequence[Usage], asked: Asked) -> list[dict[str, Any]]:
        groups: dict[tuple[Any, ...], list[float]] = {}  # -> [nano-USD, tokens]
        for row, line_item, nano, tokens in self._line_items(rows):
            if asked.line_items and line_item not in asked.line_items:
                continue
            values = {"project_id": row.project_id, "api_key_id": row.api_key_id or None, "line_item": line_item}
            key = tuple(values.get(name) for name in asked.group_by)
            total = groups.setdefault(key, [0.0, 0])
            total[0] += nano
            total[1] += tokens
        results = []
        for key, (nano, tokens) in sorted(groups.items(), key=lambda item: _order(item[0])):
            grouped = dict(zip(asked.group_by, key, strict=True))
            result: dict[str, Any] = {
                "object": "organization.costs.result",
                "amount": {"value": round(nano) / NANO, "currency": "usd"},
                "line_item": grouped.get("line_item"),
                "project_id": grouped.get("project_id"),
            }
            if "api_key_id" in grouped:
                result["api_key_id"] = grouped["api_key_id"]
            if "line_item" in grouped:
                result.update(quantity=tokens, quantity_unit="tokens")
            results.append(result)
        return results

    def _line_items(self, rows: Iterable[Usage]) -> Iterable[tuple[Usage, str, float, int]]:
        """Each row's cost by line item: its uncached input, cached input and output tokens,
        the row's cost shared among them as the model's prices are now."""
        for row in rows:
            prices = self._prices.get(row.model, Prices())
            cached_price = prices.input if prices.cached_input is None else prices.cached_input
            parts = (
                ("input", row.input_tokens - row.input_cached_tokens, prices.input),
                ("cached input", row.input_cached_tokens, cached_price),
                ("output", row.output_tokens, prices.output),
            )
            weights = [tokens * price for _, tokens, price in parts]
            whole = sum(weights)
            for (part, tokens, _), weight in zip(parts, weights, strict=True):
                share = row.cost * weight / whole if whole else (row.cost if part == "input" else 0)
                if tokens or share:
                    yield row, f"{row.model}, {part}", share, tokens


def _order(key: tuple[Any, ...]) -> tuple[Any, ...]:
    """Groups in a stable order (None first, whatever the other values' type)."""
    return tuple((value is not None, str(value)) for value in key)


def _usage(name: str, rows: Sequence[Usage], group_by: tuple[str, ...]) -> list[dict[str, Any]]:
    """A bucket's usage results: one per group of `group_by` (one in all without)."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    for row in rows:
        values = {"project_id": row.project_id, "model": row.model, "api_key_id": row.api_key_id or None,
                  "batch": row.batch}  # fmt: skip
        key = tuple(values.get(group) for group in group_by)
        total = groups.setdefault(key, [0, 0, 0, 0])
        total[0] += row.num_model_requests
        total[1] += row.input_tokens
        total[2] += row.input_cached_tokens
        total[3] += row.output_tokens
    results = []
    for key, (requests, input_tokens, cached, output) in sorted(groups.items(), key=lambda item: _order(item[0])):
        grouped = dict(zip(group_by, key, strict=True))
        common = {"project_id": grouped.get("project_id"), "user_id": None, "api_key_id": grouped.get("api_key_id"),
                  "model": grouped.get("model")}  # fmt: skip
        if name == "embeddings":
            results.append({"object": "organization.usage.embeddings.result", "input_tokens": input_tokens,
                            "num_model_requests": requests, **common})  # fmt: skip
            continue
        results.append(
            {
                "object": "organization.usage.completions.result",
                "input_tokens": input_tokens,
                "output_tokens": output,
                "input_cached_tokens": cached,
                "input_audio_tokens": 0,
                "output_audio_tokens": 0,
                "num_model_requests": requests,
                **common,
                "batch": grouped.get("batch"),
                "service_tier": None,
            }
        )
    return results
