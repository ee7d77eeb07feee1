"""The Redis key layout both sides share: token windows, and the fields of usage, capacity and webhook counts."""

from __future__ import annotations

import calendar

import pytest

from shared.contract.keys import (
    Keys,
    TokenWindow,
    capacity_field,
    capacity_queue,
    model_use_prefix,
    usage_bucket_field,
    usage_bucket_prefix,
    usage_day,
    usage_field,
    usage_minute,
    usage_month,
    usage_prefix,
    webhook_count_field,
    webhook_count_of,
)

pytestmark = pytest.mark.unit

NOON = calendar.timegm((2026, 12, 7, 12, 0, 30))


def test_token_windows_are_the_minute_then_the_utc_day() -> None:
    keys = Keys("p:")
    assert keys.token_windows("acme", NOON) == [
        f"p:tokens:acme:m{int(NOON // 60)}",
        f"p:tokens:acme:d{int(NOON // 86_400)}",
    ]
    assert keys.tokens("acme", TokenWindow.DAY, NOON + 3600) == keys.token_windows("acme", NOON)[1]


def test_a_window_ends_at_its_next_boundary() -> None:
    assert TokenWindow.MINUTE.ends_at(NOON) == NOON + 30
    assert TokenWindow.DAY.ends_at(NOON) == NOON + 12 * 3600 - 30


def test_usage_fields_read_back_their_tenant_model_and_count() -> None:
    assert usage_day(NOON) == "2026-12-07"
    assert usage_minute(NOON) == "2026-12-07T12:00Z"
    field = usage_prefix("acme", "org|model") + "prompt_tokens"
    assert usage_field(field) == ("acme", "org|model", "prompt_tokens")


def test_usage_bucket_fields_read_back_their_tenant_key_batch_kind_model_and_count() -> None:
    field = usage_bucket_prefix("proj_a", "key_1", True, "completions", "org|model") + "cached"
    assert usage_bucket_field(field) == ("proj_a", "key_1", True, "completions", "org|model", "cached")
    field = usage_bucket_prefix("research", "", False, "embeddings", "e") + "requests"
    assert usage_bucket_field(field) == ("research", "", False, "embeddings", "e", "requests")
    assert Keys("p:").usage_buckets(int(NOON // 60)) == f"p:usage-buckets:{int(NOON // 60)}"
    with pytest.raises(ValueError):
        usage_bucket_field("not|ours")


def test_capacity_and_webhook_count_fields_read_back_what_was_written() -> None:
    assert capacity_queue(capacity_field("jobs.big", "celery@host-1")) == "jobs.big"
    assert webhook_count_of(webhook_count_field("billing", "gave_up")) == ("billing", "gave_up")


def test_a_utc_month_is_named_and_bounded_december_into_january() -> None:
    assert usage_month(NOON) == (
        "2026-12",
        calendar.timegm((2026, 12, 1, 0, 0, 0)),
        calendar.timegm((2027, 1, 1, 0, 0, 0)),
    )
    february = usage_month(calendar.timegm((2028, 2, 29, 23, 59, 59)))
    assert february == ("2028-02", calendar.timegm((2028, 2, 1, 0, 0, 0)), calendar.timegm((2028, 3, 1, 0, 0, 0)))
    assert usage_month(february[2])[0] == "2028-03"  # its end is the next month's start
    assert Keys("p:").spend("proj_1", "2026-12") == "p:spend:proj_1:2026-12"


def test_a_projects_use_of_models_is_one_hash_a_minute_and_one_a_utc_day_by_model() -> None:
    keys = Keys("p:")
    assert keys.model_use_windows("proj_a", NOON) == [
        f"p:model-use:proj_a:m{int(NOON // 60)}",
        f"p:model-use:proj_a:d{int(NOON // 86_400)}",
    ]
    assert keys.model_use("proj_a", TokenWindow.DAY, NOON) == keys.model_use_windows("proj_a", NOON)[1]
    # A model's name may hold ":" and "/": its fields end with the count's name after "|".
    assert model_use_prefix("org/big:8b") + "requests" == "org/big:8b|requests"
