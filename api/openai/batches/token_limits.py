"""A project's batches under its ``batch_1_day_max_input_tokens`` on each model (its rate
limits, set through the Administration API: shared/tenants.py `ModelLimits`).

How a batch is counted: as it is validated (``validating`` to ``in_progress``, before any
of its lines is queued), its lines' input tokens are estimated per model and charged,
all at once, to the project's UTC day for each model (the contract's BATCH_CHARGE): a
batch whose estimate would take a model past its limit is refused whole (``failed``,
OpenAI's ``token_limit_exceeded``, naming the model and the limit), and nothing of it is
charged or run. A batch admitted keeps its charge whatever becomes of it (cancelled,
expired): the limit bounds the input a project submits per day, as OpenAI's batch queue
limit bounds what it enqueues. A batch driven again (its process died) is not charged twice.

The estimate is OpenAI's rule of thumb, about four characters a token, of the text a line
sends (its messages, prompt or input, with their tools and settings; an embedding's
token ids count one each): the model server counts tokens only as it runs a line, and a
batch is refused before any line runs. Lines are counted apart from interactive
requests: a batch's lines take nothing of the model's requests or tokens per minute.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import redis.asyncio as aioredis

from api.openai.batches.input import InputLine
from shared.config import Config
from shared.contract.keys import TokenWindow, model_use_prefix
from shared.contract.scripts import BATCH_CHARGE
from shared.tenants import ModelLimits

CHARS_PER_TOKEN = 4
DAY_SECONDS = 172_800  # the day's hash is kept two days: the whole UTC day, whenever it is read


def estimated_input_tokens(job: dict[str, Any]) -> int:
    """About how many input tokens a line's job sends its model (at least 1)."""
    chars, tokens = 0, 0

    def walk(value: Any, ids: bool) -> None:
        nonlocal chars, tokens
        if isinstance(value, str):
            chars += len(value)
        elif isinstance(value, bool):
            return
        elif isinstance(value, int) and ids:
            tokens += 1
        elif isinstance(value, dict):
            for item in value.values():
                walk(item, ids)
        elif isinstance(value, list):
            for item in value:
                walk(item, ids)

    walk(job.get("openai"), False)
    walk(job.get("messages"), False)
    walk(job.get("content"), False)
    embed = job.get("embed")
    walk(embed.get("input") if isinstance(embed, dict) else None, True)
    return max(1, tokens + math.ceil(chars / CHARS_PER_TOKEN))


class BatchTokenLimits:
    """Charges batches to their projects' daily input tokens per model (one per API process)."""

    def __init__(
        self,
        config: Config,
        redis: aioredis.Redis,
        limits_of: Callable[[str], Mapping[str, ModelLimits]],
        model_of: Callable[[dict[str, Any]], str],
    ) -> None:
        """`limits_of(tenant)`: its rate limits by model, as this process holds them;
        `model_of(job)`: the registry's name of a line's model."""
        self._keys = config.keys
        self._charge = redis.register_script(BATCH_CHARGE)
        self._limits_of = limits_of
        self._model_of = model_of

    async def charge(self, batch_id: str, tenant: str, lines: list[InputLine], now: float) -> str | None:
        """Charge the batch's estimated input tokens to the day of `now`: None when
        admitted (or no model it uses has a limit), else why it is refused."""
        limits = self._limits_of(tenant)
        if not any(limit.batch_input_tokens_per_day for limit in limits.values()):
            return None
        wanted: dict[str, int] = {}
        for line in lines:
            model = self._model_of(line.job)
            limit = limits.get(model)
            if limit is not None and limit.batch_input_tokens_per_day:
                wanted[model] = wanted.get(model, 0) + estimated_input_tokens(line.job)
        if not wanted:
            return None
        args: list[Any] = [batch_id, DAY_SECONDS]
        for model, tokens in wanted.items():
            args += [model_use_prefix(model), tokens, limits[model].batch_input_tokens_per_day]
        refused = await self._charge(keys=[self._keys.model_use(tenant, TokenWindow.DAY, now)], args=args)
        if not refused:
            return None
        model, used = refused[0].decode().removesuffix("|"), int(refused[1])
        most = limits[model].batch_input_tokens_per_day
        return (
            f"Enqueued token limit reached for {model} in project {tenant}: batch_1_day_max_input_tokens {most},"
            f" {used} used this UTC day, and this batch's lines send about {wanted[model]} input tokens to it"
            " (about 4 characters a token). Submit fewer lines, or try again tomorrow (UTC)."
        )
