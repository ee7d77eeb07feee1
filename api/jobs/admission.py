"""Admitting a job: whether it may be queued, and under which claim of its id.

In order: the limits on what a job may hold (``MAX_*``, whichever endpoint it came
through), that it is a job the workers take (the contract's `Job`), its tenant's
quotas and its project's rate limits on the job's model (api/tenancy/quotas.py), and
the claim of its key (api/jobs/store.py: a new job, the same job again, another job's
id: 409, or too many waiting: 429). Nothing is queued before all of them passed.
"""

from __future__ import annotations

from typing import Any

from api.errors import JobConflict, LimitExceeded, QueueFull
from api.jobs.route import JobRoute
from api.jobs.store import Claim, JobStore
from api.jobs.work import check_work
from api.tenancy.quotas import Quotas
from shared.config import Config
from shared.contract import Job


class Admission:
    """Admits jobs (one per API process)."""

    def __init__(self, config: Config, store: JobStore, quotas: Quotas) -> None:
        self._config = config
        self._store = store
        self._quotas = quotas

    async def admit(
        self, route: JobRoute, job: dict[str, Any], reply_to: str = "", background: bool = False
    ) -> tuple[Claim, Job]:
        """Check the job and claim its key; its result will also be published on
        `reply_to` (this process's channel) when given. A job queued in the `background`
        is marked so: a reader of its stream that leaves does not cancel it. The claim,
        and the job as the contract types it (what is sent: `Job.wire`)."""
        check_job(self._config, job)
        # What the workers will parse: a job they would refuse is this process's bug (500).
        typed = Job.parse(job)
        # A model's job counts to its tenant's quotas; the gateway's own (llm.models) does not.
        if not route.internal:
            await self._quotas.admit(route.tenant, route.key, route.label)
        try:
            claim = await self._store.claim(
                route.key, route.task, job, reply_to, route.tenant.name, route.queue, background, route.priority
            )
        except QueueFull:
            await self._quotas.release(route.tenant, route.key, route.label)
            raise
        if not claim.same:
            raise JobConflict(f"job_id {route.job_id!r} is already used by a job with another body")
        return claim, typed

    async def join_stream(self, route: JobRoute) -> str:
        """A client begins reading the job's stream, within its tenant's streams_in_flight
        (429 past it): the reader's token, for `leave_stream`."""
        return await self._quotas.join_stream(route.tenant, route.key)

    async def leave_stream(self, route: JobRoute, token: str) -> int:
        """The reader of `token` stopped: how many clients still read the job's stream."""
        return await self._quotas.leave_stream(route.tenant, route.key, token)

    async def release(self, route: JobRoute) -> bool:
        """A job admitted and then not queued: its claim forgotten (so that a retry
        queues it) and its quota given back. False when Redis could not be told (the
        claim stays until its TTL)."""
        if not await self._store.release(route.key):
            return False
        await self._quotas.release(route.tenant, route.key, route.label)
        return True


def check_tokens(config: Config, tokens: int | None, name: str) -> None:
    """Refuse a count of tokens to generate over MAX_TOKENS_LIMIT (422, naming the field):
    for a field the job's tokens_limit does not come from (``max_tokens`` beside
    ``max_completion_tokens``, which a chat request's limit is taken from)."""
    if tokens is not None and tokens > config.max_tokens_limit:
        raise LimitExceeded(f"{name}: {tokens}; at most {config.max_tokens_limit} (MAX_TOKENS_LIMIT)")


def check_job(config: Config, job: dict[str, Any], given_as: str | None = None) -> None:
    """Refuse a job that holds more than the configured limits allow (422, naming the
    limit; and its messages and their text as `given_as`, the field they came from, when
    that is not the job's own)."""
    request = job.get("openai") if isinstance(job.get("openai"), dict) else job
    prompt = request.get("prompt", job.get("content"))
    texts = [prompt] if isinstance(prompt, str) else [p for p in prompt or [] if isinstance(p, str)]
    messages = request.get("messages")
    if isinstance(messages, list):
        if len(messages) > config.max_messages:
            raise LimitExceeded(
                f"{given_as or 'messages'}: {len(messages)} messages; at most {config.max_messages} (MAX_MESSAGES)"
            )
        for message in messages:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str):
                texts.append(content)
            elif isinstance(content, list):  # content parts: their text counts
                parts = [part for part in content if isinstance(part, dict)]
                texts += [part["text"] for part in parts if isinstance(part.get("text"), str)]
    chars = sum(len(text) for text in texts)
    if chars > config.max_prompt_chars:
        raise LimitExceeded(
            f"{given_as or 'prompt'}: {chars} characters; at most {config.max_prompt_chars} (MAX_PROMPT_CHARS)"
        )
    meta = job.get("meta") or {}
    stop_words = meta.get("stop_words") or []
    if len(stop_words) > config.max_stop_words:
        raise LimitExceeded(f"stop_words: {len(stop_words)} words; at most {config.max_stop_words} (MAX_STOP_WORDS)")
    longest = max((len(word) for word in stop_words), default=0)
    if longest > config.max_stop_word_chars:
        raise LimitExceeded(
            f"stop_words: a word of {longest} characters; at most {config.max_stop_word_chars} (MAX_STOP_WORD_CHARS)"
        )
    tokens = meta.get("tokens_limit")
    if tokens is not None and tokens > config.max_tokens_limit:
        raise LimitExceeded(f"tokens_limit: {tokens}; at most {config.max_tokens_limit} (MAX_TOKENS_LIMIT)")
    check_work(config, job)
