"""The usage and costs reports: what a query may ask (a 400 naming the parameter
otherwise), buckets and pages, groups and filters, costs by line item, and the minutes
not recorded yet read from Redis (faked at the edge) without counting any twice."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.exceptions import RequestValidationError
from starlette.datastructures import QueryParams

from api.admin.usage import COMPLETIONS, COSTS, EMBEDDINGS, UsageReports, parse
from shared.config import Config
from shared.contract.keys import usage_bucket_prefix
from shared.control.database import engine_for, migrate
from shared.control.usage import Usage, UsageHistory
from shared.registry import Model, Prices, Registry
from tests.unit.api.edge import FakeRedis

pytestmark = pytest.mark.unit

CONFIG = Config(_env_file=None, redis_prefix="t")  # type: ignore[call-arg]
DAY = 1_764_547_200  # a UTC day's start (2025-12-01), long ago: no minute of it is read from Redis
PRICED = Prices(input=2.0, cached_input=0.5, output=8.0)
MODEL = Model("m", "http://m", "q-m", prices=PRICED)
REGISTRY = Registry((MODEL, Model("free", "http://f", "q-f")), MODEL)


@pytest.fixture
def history(tmp_path: Path) -> Iterator[UsageHistory]:
    engine = engine_for(f"sqlite:///{tmp_path}/control.db")
    migrate(engine)
    yield UsageHistory(engine)
    engine.dispose()


def used(
    start: int,
    project: str = "proj_a",
    model: str = "m",
    key: str = "key_1",
    batch: bool = False,
    kind: str = "completions",
    requests: int = 1,
    tokens: tuple[int, int, int] = (1000, 400, 200),
) -> Usage:
    cost = REGISTRY.by_name(model).prices.cost(tokens[0], tokens[2], tokens[1])
    return Usage(start, project, model, key, batch, kind, requests, *tokens, cost)  # fmt: skip


def report(reports: UsageReports, name: str, query: str) -> dict[str, Any]:
    return asyncio.run(reports.report(name, QueryParams(query)))


@pytest.mark.parametrize(
    ("report", "query", "param"),
    [
        (COMPLETIONS, "", "start_time"),
        (COMPLETIONS, "start_time=-1", "start_time"),
        (COMPLETIONS, "start_time=abc", "start_time"),
        (COMPLETIONS, "start_time=99999999999999", "start_time"),
        (COMPLETIONS, "start_time=100&end_time=50", "end_time"),
        (COMPLETIONS, "start_time=100&end_time=100", "end_time"),
        (COMPLETIONS, "start_time=1&bucket_width=1w", "bucket_width"),
        (COSTS, "start_time=1&bucket_width=1h", "bucket_width"),
        (COMPLETIONS, "start_time=1&limit=0", "limit"),
        (COMPLETIONS, "start_time=1&limit=32", "limit"),  # 1d: 31 at most
        (COMPLETIONS, "start_time=1&bucket_width=1m&limit=1441", "limit"),
        (COSTS, "start_time=1&limit=181", "limit"),
        (COMPLETIONS, "start_time=1&limit=99999999999999999999", "limit"),
        (COMPLETIONS, "start_time=1&group_by[]=colour", "group_by"),
        (EMBEDDINGS, "start_time=1&group_by[]=batch", "group_by"),
        (COSTS, "start_time=1&group_by[]=model", "group_by"),
        (COMPLETIONS, "start_time=1&project_ids[]=%ED%A0%80", "project_ids"),  # a lone surrogate's UTF-8
        (COMPLETIONS, "start_time=1&models[]=a%00b", "models"),
        (COMPLETIONS, "start_time=1&batch=maybe", "batch"),
        (EMBEDDINGS, "start_time=1&batch=true", "batch"),
        (COMPLETIONS, "start_time=1&line_items[]=x", "line_items"),
        (COMPLETIONS, "start_time=1&page=nonsense", "page"),
        (COMPLETIONS, "start_time=86400&end_time=172800&page=page_259200", "page"),  # past the range
        (COMPLETIONS, "start_time=1&start_time=2", "start_time"),
        # A list written with indices (as qs and PHP write it) was dropped, and every
        # project's usage answered as if it were the one asked for.
        (COMPLETIONS, "start_time=1&project_ids[0]=proj_a", "project_ids[0]"),
        (COSTS, "start_time=1&api_key_ids[1]=key_a", "api_key_ids[1]"),
        (COMPLETIONS, "start_time=1&group_by[0]=model", "group_by[0]"),
        (COMPLETIONS, "start_time=1&batch[]=true", "batch[]"),
    ],
)
def test_a_query_it_does_not_take_is_refused_naming_the_parameter(report: Any, query: str, param: str) -> None:
    with pytest.raises(RequestValidationError) as refused:
        parse(report, QueryParams(query), DAY)
    assert refused.value.errors()[0]["loc"] == ("query", param)


def test_a_query_takes_openais_defaults_and_rounds_its_start_down_to_a_bucket() -> None:
    asked = parse(COMPLETIONS, QueryParams(f"start_time={DAY + 5}"), DAY + 3 * 86_400 + 10)
    assert (asked.width, asked.first, asked.limit) == ("1d", DAY, 7)
    assert asked.end == DAY + 4 * 86_400  # to the end of the bucket of now
    assert parse(COMPLETIONS, QueryParams("start_time=0&bucket_width=1h"), DAY).limit == 24
    assert parse(COMPLETIONS, QueryParams("start_time=0&bucket_width=1m"), DAY).limit == 60
    assert parse(COMPLETIONS, QueryParams(f"start_time={DAY + 86_400}"), DAY).end == DAY + 86_400  # no bucket yet
    listed = parse(COMPLETIONS, QueryParams("start_time=0&group_by=model&group_by[]=project_id&models[]=m"), DAY)
    assert set(listed.group_by) == {"model", "project_id"} and listed.chosen.models == ("m",)


def test_buckets_group_and_page_as_asked_with_empty_buckets_shown(history: UsageHistory) -> None:
    history.record([used(DAY + 60), used(DAY + 120, key="key_2", batch=True), used(DAY + 3600, project="team"),
                    used(DAY + 7200, model="free", tokens=(5, 0, 1))])  # fmt: skip
    reports = UsageReports(CONFIG, history, FakeRedis(), REGISTRY)  # type: ignore[arg-type]
    end = DAY + 4 * 3600
    whole = report(reports, "completions", f"start_time={DAY}&end_time={end}&bucket_width=1h")
    assert whole["object"] == "page" and not whole["has_more"] and whole["next_page"] is None
    assert [(b["object"], b["start_time"], b["end_time"]) for b in whole["data"]] == [
        ("bucket", DAY + h * 3600, DAY + (h + 1) * 3600) for h in range(4)
    ]
    first = whole["data"][0]["results"]
    assert first == [{"object": "organization.usage.completions.result", "input_tokens": 2000, "output_tokens": 400,
                      "input_cached_tokens": 800, "input_audio_tokens": 0, "output_audio_tokens": 0,
                      "num_model_requests": 2, "project_id": None, "user_id": None, "api_key_id": None,
                      "model": None, "batch": None, "service_tier": None}]  # fmt: skip
    assert whole["data"][3]["results"] == []  # a bucket with nothing used
    grouped = report(reports, "completions", f"start_time={DAY}&end_time={end}&bucket_width=1h"
                     "&group_by[]=api_key_id&group_by[]=batch")  # fmt: skip
    assert [(r["api_key_id"], r["batch"], r["num_model_requests"]) for r in grouped["data"][0]["results"]] == [
        ("key_1", False, 1), ("key_2", True, 1)
    ]  # fmt: skip
    assert grouped["data"][0]["results"][0]["project_id"] is None  # not grouped by it
    chosen = report(reports, "completions", f"start_time={DAY}&end_time={end}&bucket_width=1h&batch=false"
                    "&project_ids[]=proj_a&group_by[]=project_id")  # fmt: skip
    assert [[r["project_id"] for r in b["results"]] for b in chosen["data"]] == [["proj_a"], [], ["proj_a"], []]
    # Pages of two hours, the second from the first's next_page.
    page = report(reports, "completions", f"start_time={DAY}&end_time={end}&bucket_width=1h&limit=2")
    assert page["has_more"] and page["next_page"] == f"page_{DAY + 7200}" and len(page["data"]) == 2
    rest = report(reports, "completions", f"start_time={DAY}&end_time={end}&bucket_width=1h&limit=2"
                  f"&page={page['next_page']}")  # fmt: skip
    assert [b["start_time"] for b in rest["data"]] == [DAY + 7200, DAY + 10_800] and not rest["has_more"]
    later = report(reports, "completions", f"start_time={2 * DAY}")  # after now, no end: no bucket yet
    assert (later["data"], later["has_more"], later["next_page"]) == ([], False, None)
    # A filter by users matches nothing: the gateway has none.
    assert all(not b["results"] for b in report(reports, "completions", f"start_time={DAY}&user_ids[]=u")["data"])


def test_embeddings_are_a_report_of_their_own(history: UsageHistory) -> None:
    history.record([used(DAY), used(DAY, kind="embeddings", tokens=(9, 0, 0))])
    reports = UsageReports(CONFIG, history, FakeRedis(), REGISTRY)  # type: ignore[arg-type]
    found = report(reports, "embeddings", f"start_time={DAY}&limit=1&group_by[]=model&group_by[]=project_id")
    assert found["data"][0]["results"] == [{"object": "organization.usage.embeddings.result", "input_tokens": 9,
                                            "num_model_requests": 1, "project_id": "proj_a", "user_id": None,
                                            "api_key_id": None, "model": "m"}]  # fmt: skip


def test_costs_are_the_tokens_at_the_models_prices_by_line_item(history: UsageHistory) -> None:
    history.record([used(DAY), used(DAY + 60, project="team", key=""), used(DAY, model="free")])
    reports = UsageReports(CONFIG, history, FakeRedis(), REGISTRY)  # type: ignore[arg-type]
    # Each: 600 uncached at $2, 400 cached at $0.50, 200 out at $8 per million = $0.003.
    whole = report(reports, "costs", f"start_time={DAY}&limit=1")
    assert whole["data"][0]["results"] == [{"object": "organization.costs.result",
                                            "amount": {"value": 0.006, "currency": "usd"},
                                            "line_item": None, "project_id": None}]  # fmt: skip
    by_project = report(reports, "costs", f"start_time={DAY}&limit=1&group_by[]=project_id&group_by[]=api_key_id")
    assert [(r["project_id"], r["api_key_id"], r["amount"]["value"]) for r in by_project["data"][0]["results"]] == [
        ("proj_a", "key_1", 0.003), ("team", None, 0.003)
    ]  # fmt: skip
    items = report(reports, "costs", f"start_time={DAY}&limit=1&group_by[]=line_item&project_ids[]=proj_a")
    assert [(r["line_item"], r["amount"]["value"], r["quantity"], r["quantity_unit"])
            for r in items["data"][0]["results"]] == [
        ("free, cached input", 0.0, 400, "tokens"), ("free, input", 0.0, 600, "tokens"),
        ("free, output", 0.0, 200, "tokens"), ("m, cached input", 0.0002, 400, "tokens"),
        ("m, input", 0.0012, 600, "tokens"), ("m, output", 0.0016, 200, "tokens"),
    ]  # fmt: skip
    chosen = report(reports, "costs", f"start_time={DAY}&limit=1&line_items[]=m, output")
    assert chosen["data"][0]["results"][0]["amount"]["value"] == 0.0032


def test_minutes_not_recorded_yet_are_read_from_redis_and_none_twice(history: UsageHistory) -> None:
    redis = FakeRedis()
    now = DAY + 10 * 60 + 30  # during minute 10
    reports = UsageReports(CONFIG, history, redis, REGISTRY, clock=lambda: now)  # type: ignore[arg-type]
    minutes = [DAY // 60 + n for n in (8, 9, 10)]
    prefix = usage_bucket_prefix("proj_a", "key_1", False, "completions", "m").encode()
    for minute in minutes:  # each minute: one request of 10 tokens in, 2 out
        redis.hashes[CONFIG.keys.usage_buckets(minute)] = {prefix + b"requests": b"1", prefix + b"input": b"10",
                                                           prefix + b"output": b"2"}  # fmt: skip
    history.record([Usage(minutes[0] * 60, "proj_a", "m", "key_1", False, "completions", 1, 10, 0, 2, 0)])
    found = report(reports, "completions", f"start_time={DAY}&bucket_width=1m&limit=11")
    counted = {b["start_time"]: b["results"][0]["num_model_requests"] for b in found["data"] if b["results"]}
    assert counted == {minute * 60: 1 for minute in minutes}  # minute 8 from the database, 9 and 10 from Redis
    daily = report(reports, "completions", f"start_time={DAY}&bucket_width=1d")
    assert daily["data"][0]["results"][0]["num_model_requests"] == 3
    redis.down = True  # Redis away: the history alone
    alone = report(reports, "completions", f"start_time={DAY}&bucket_width=1d")
    assert alone["data"][0]["results"][0]["num_model_requests"] == 1
