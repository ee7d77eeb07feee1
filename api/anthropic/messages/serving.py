"""The Messages API's work: a message request made an ``llm.chat`` job (the same job
/v1/chat/completions queues: the same queue, tenants, quotas, fair share, fleets, traces
and durability), and the job's answer as Anthropic's message, whole or as its stream
events; a request's prompt counted by its model's server (the Responses API's
`TokenCounter`: asked directly, not queued).

A model whose servers serve /v1/messages themselves (the registry's ``messages_api``)
gets the request as its client gave it, beside its translation (tasks/model/messages.py
sends it there); see docs/anthropic.md for what each way keeps and loses."""

from __future__ import annotations

from typing import Any

from fastapi import Response

from api.anthropic.messages.events import MessageEvents
from api.anthropic.messages.translate import as_given, chat_request, message_object, messages_job
from api.anthropic.messages.types import CountTokensRequest, MessagesRequest
from api.errors import LimitExceeded
from api.http.sse import last_event_id, open_stream, stream_response
from api.jobs.admission import check_job, check_tokens
from api.jobs.route import JobRouting
from api.jobs.runner import JobRunner
from api.native.types import new_job_id
from api.observability.server_timing import Timing
from api.openai.responses.input_tokens import TokenCounter
from shared.config import Config
from shared.contract import TaskName
from shared.registry import Registry
from shared.tenants import Tenant


class Messages:
    """Anthropic's messages, run as chat jobs."""

    def __init__(
        self, config: Config, routing: JobRouting, runner: JobRunner, registry: Registry, counter: TokenCounter
    ) -> None:
        self._config = config
        self._routing = routing
        self._runner = runner
        self._registry = registry
        self._counter = counter

    async def create(
        self, tenant: Tenant, body: MessagesRequest, idempotency_key: str | None, resume: str | None, timing: Timing
    ) -> dict[str, Any] | Response:
        """The message answering `body`: whole, or as Anthropic's stream events (those after
        the event `resume` names, for a client that comes back); the request's `timing`
        told of its job."""
        check_tokens(self._config, body.max_tokens, "max_tokens")
        self._check_stops(body.stop_sequences or [])
        job_id = idempotency_key or new_job_id()
        route, job = self._routing.route(TaskName.CHAT, job_id, messages_job(body), tenant)
        if self._registry.by_name(route.label).messages_api:
            # Its server serves /v1/messages itself: the request goes there as given (its
            # translation stays beside, for a fallback model's server that does not).
            job = {**job, "anthropic": as_given(body)}
        timing.ran(route)
        if body.stream:
            events = await open_stream(self._runner, route, job)
            renderer = MessageEvents(job_id, body.model, body.stop_sequences)
            return stream_response(
                self._runner, route, events, renderer.render, renderer.failed, last_event_id(resume),
                opening=renderer.opening, timing=timing,
            )  # fmt: skip
        answer = await self._runner.run(route, job, self._config.wait_timeout)
        timing.ran(route, answer)
        return message_object(job_id, answer, body.model, body.stop_sequences)

    def _check_stops(self, stops: list[str]) -> None:
        """stop_sequences within MAX_STOP_WORDS and MAX_STOP_WORD_CHARS (400 naming them)."""
        config = self._config
        if len(stops) > config.max_stop_words:
            raise LimitExceeded(f"stop_sequences: {len(stops)}; at most {config.max_stop_words} (MAX_STOP_WORDS)")
        longest = max((len(stop) for stop in stops), default=0)
        if longest > config.max_stop_word_chars:
            raise LimitExceeded(
                f"stop_sequences: one of {longest} characters; at most {config.max_stop_word_chars}"
                " (MAX_STOP_WORD_CHARS)"
            )

    async def count_tokens(self, tenant: Tenant, body: CountTokensRequest) -> dict[str, Any]:
        """The tokens `body`'s prompt (system, messages, tools) is to its model, counted by
        the model's server as it counts a chat's prompt."""
        route, routed = self._routing.route(TaskName.CHAT, "count-tokens", {"meta": {"model": body.model}}, tenant)
        request = chat_request(body)
        check_job(self._config, {"openai": request}, given_as="messages")
        served = routed["meta"].get("model") or self._config.default_model or None
        model = self._registry.by_name(route.label)
        count = await self._counter.count(tenant.name, model, served, request["messages"], request.get("tools"))
        return {"input_tokens": count}
