"""A project's batches under its batch_1_day_max_input_tokens (api/openai/batches/token_limits.py):
the estimate of a line's input tokens, and what is charged for which model, in one call;
the script itself runs on a real Redis in tests/integration/shared/test_contract.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from api.openai.batches.input import InputLine
from api.openai.batches.token_limits import BatchTokenLimits, estimated_input_tokens
from shared.contract import TaskName
from shared.contract.keys import TokenWindow
from shared.contract.scripts import BATCH_CHARGE
from shared.tenants import ModelLimits
from tests.unit.api.edge import FakeRedis, config

pytestmark = pytest.mark.unit

NOW = 1_800_000_000.0


def line(index: int, job: dict[str, Any]) -> InputLine:
    return InputLine(index, index + 1, f"c{index}", "/v1/chat/completions", TaskName.CHAT, job, job["meta"]["model"])


def chat(model: str, text: str) -> dict[str, Any]:
    return {"meta": {"model": model}, "openai": {"messages": [{"role": "user", "content": text}]}}


def test_a_lines_input_is_about_four_characters_a_token_and_token_ids_one_each() -> None:
    assert estimated_input_tokens(chat("m", "x" * 397)) == 101  # 397 characters and the role's 4, rounded up
    assert estimated_input_tokens({"meta": {}, "embed": {"input": [[1, 2, 3], [4]]}}) == 4
    assert estimated_input_tokens({"meta": {}, "embed": {"input": ["abcdefgh"]}}) == 2
    assert estimated_input_tokens({"meta": {}, "content": ""}) == 1  # never nothing


def limits(found: dict[str, ModelLimits]) -> tuple[BatchTokenLimits, FakeRedis]:
    redis = FakeRedis()
    redis.scripts[BATCH_CHARGE] = lambda *_: None
    return BatchTokenLimits(config(), redis, lambda tenant: found, lambda job: job["meta"]["model"]), redis  # type: ignore[arg-type]


def test_a_batch_is_charged_per_model_with_a_limit_in_one_call() -> None:
    charging, redis = limits({"big": ModelLimits(batch_input_tokens_per_day=1000), "small": ModelLimits(5, 0, 0, 0)})
    lines = [line(0, chat("big", "x" * 40)), line(1, chat("small", "y" * 40)), line(2, chat("big", "z" * 36))]
    assert asyncio.run(charging.charge("batch_1", "proj_a", lines, NOW)) is None
    ((_, keys, args),) = redis.ran
    assert keys == [config().keys.model_use("proj_a", TokenWindow.DAY, NOW)]
    assert args == ["batch_1", 172_800, "big|", 11 + 10, 1000]  # small has no batch limit: not charged


def test_a_project_without_a_batch_limit_on_its_models_costs_no_call() -> None:
    for found in ({}, {"big": ModelLimits(requests_per_minute=3)}, {"other": ModelLimits(0, 0, 0, 10)}):
        charging, redis = limits(found)
        assert asyncio.run(charging.charge("batch_1", "proj_a", [line(0, chat("big", "hi"))], NOW)) is None
        assert not redis.ran


def test_a_batch_past_its_limit_is_refused_naming_the_model_the_limit_and_what_it_needs() -> None:
    charging, redis = limits({"org/big": ModelLimits(batch_input_tokens_per_day=50)})
    redis.scripts[BATCH_CHARGE] = lambda *_: [b"org/big|", 45]
    refused = asyncio.run(charging.charge("batch_1", "proj_a", [line(0, chat("org/big", "x" * 36))], NOW))
    assert refused is not None and "Enqueued token limit reached for org/big in project proj_a" in refused
    assert "batch_1_day_max_input_tokens 50, 45 used this UTC day" in refused and "about 10 input tokens" in refused
