"""The Responses API's work: a request made a chat job and its record (its id the job's,
of the request's tenant), a job read back as a response, whole or as typed events, and
a request's input counted by its model's server (api/openai/responses/input_tokens.py).

A response is queued, run by the model's workers against the model server's chat
completions, and kept as every job is, so a background response survives what a job
survives. Its record (`api/openai/responses/store.py`) keeps what the response object
repeats, its input items and the conversation it continues. See docs/responses.md.
"""

import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from fastapi import Response

from api.errors import BadRequest, GatewayError, InvalidInput, JobCancelled, JobFailed, ResponseNotFound
from api.http.sse import open_stream, stream_response
from api.jobs.admission import check_job, check_tokens
from api.jobs.route import JobRoute, JobRouting
from api.jobs.runner import JobRunner
from api.jobs.store import JobStore
from api.jobs.webhook_events import WebhookEvents
from api.observability.server_timing import Timing
from api.openai.conversations.serving import Conversations
from api.openai.responses.input_tokens import TokenCounter
from api.openai.responses.objects import STATUSES, ResponseEvents, error_code, response_object
from api.openai.responses.sealing import CompactionSeal
from api.openai.responses.store import ResponseStore
from api.openai.responses.translate import (
    asked_of,
    chat_messages,
    chat_tools,
    check_tool_outputs,
    conversation_after,
    given_input,
    input_items,
    response_job,
)
from api.openai.responses.types import InputTokensRequest, ResponsesRequest
from shared.config import Config
from shared.contract import CancelOutcome, JobStatus, TaskName
from shared.registry import Registry
from shared.tenants import Tenant, Tenants, job_key

log = logging.getLogger(__name__)


class Responses:
    """The Responses API's work: a request made a chat job and its record, and a job
    read back as a response, whole or as typed events."""

    def __init__(
        self,
        config: Config,
        routing: JobRouting,
        runner: JobRunner,
        jobs: JobStore,
        records: ResponseStore,
        registry: Registry,
        tenants: Tenants,
        events: WebhookEvents,
        counter: TokenCounter,
        seal: CompactionSeal,
        conversations: Conversations,
    ) -> None:
        self._config = config
        self._routing = routing
        self._runner = runner
        self._jobs = jobs
        self._records = records
        self._registry = registry
        self._tenants = tenants
        self._events = events
        self._counter = counter
        self._seal = seal
        self._conversations = conversations

    async def create(self, tenant: Tenant, body: ResponsesRequest, idempotency_key: str | None, timing: Timing) -> Any:
        """A response to `body`: whole, streamed, or queued (``background``); the request's
        `timing` told of its job."""
        record, route, routed = await self._made(tenant, body, idempotency_key)
        # The record is kept once its job is queued, not before: a request refused (a
        # quota, a full queue, the broker down) leaves nothing behind.
        timing.ran(route)
        notify = self._events.for_responses
        if body.background and not body.stream:
            await self._runner.submit(route, {**routed, "stream": True}, notify=notify)
            return response_object(await self._records.save(route.key, record), "queued")
        if body.stream:
            # A background response streamed as it is made: queued as a background one (its
            # reader leaving does not cancel it; it is read on with starting_after).
            events = await open_stream(self._runner, route, routed, background=body.background, notify=notify)
            record = await self._records.save(route.key, record)
            return self._streamed(route, record, events, None, forget=not body.store, timing=timing)
        kept = {"record": record}

        async def keep() -> None:
            kept["record"] = await self._records.save(route.key, record)

        answer = await self._runner.run(route, routed, self._config.wait_timeout, queued=keep)
        timing.ran(route, answer)
        if not body.store:
            await self._records.forget(route.key)  # read: nothing kept
        return response_object(kept["record"], "completed", answer)

    async def count_input_tokens(self, tenant: Tenant, body: InputTokensRequest) -> dict[str, Any]:
        """The tokens `body`'s input would be to its model (with its instructions, tools and
        the conversation it continues), counted by the model's server as it counts a
        response's prompt: asked directly, not queued (docs/responses.md)."""
        # The model as a response's is found (404 for one the registry does not list), and
        # named as its server knows it.
        route, routed = self._routing.route(TaskName.CHAT, "input-tokens", {"meta": {"model": body.model}}, tenant)
        history = await self._history(tenant, body.previous_response_id) if body.previous_response_id else []
        items = input_items(given_input(body), "resp_count")
        messages = chat_messages(body.instructions, [*history, *items])
        if not messages:  # empty instructions alone: nothing is sent, nothing counted
            return {"object": "response.input_tokens", "input_tokens": 0}
        tools = chat_tools([tool.model_dump(exclude_none=True) for tool in body.tools or []])
        check_job(self._config, {"openai": {"messages": messages, "tools": tools}}, given_as="input")
        served = routed["meta"].get("model") or self._config.default_model or None
        count = await self._counter.count(tenant.name, self._registry.by_name(route.label), served, messages, tools)
        return {"object": "response.input_tokens", "input_tokens": count}

    async def _made(
        self,
        tenant: Tenant,
        body: ResponsesRequest,
        idempotency_key: str | None,
        history: list[dict[str, Any]] | None = None,
    ) -> tuple[dict[str, Any], JobRoute, dict[str, Any]]:
        """The response `body` asks for, not yet queued: its record, its job's route and the
        job as its workers take it. `history`: the conversation it continues, when the
        caller has it (a WebSocket's own); else previous_response_id's, read from Redis."""
        check_tokens(self._config, body.max_output_tokens, "max_output_tokens")
        # A client's retry (the same Idempotency-Key) is the same response.
        tail = hashlib.sha256(idempotency_key.encode()).hexdigest()[:32] if idempotency_key else uuid.uuid4().hex
        response_id = f"resp_{tail}"
        conversation = body.conversation_id()
        if history is None:
            history = await self._history(tenant, body.previous_response_id) if body.previous_response_id else []
            if conversation is not None:  # its items so far, before the input (never with previous_response_id)
                history = await self._conversations.context(tenant.name, conversation)
        items = input_items(given_input(body), response_id)
        if not history and not items:
            raise InvalidInput(f"input: required: conversation {conversation!r} holds no items yet")
        check_tool_outputs(history, items)
        asked_items = self._seal.expanded(tenant.name, [*history, *items], base=len(history))
        messages = chat_messages(body.instructions, asked_items)  # never empty: the schema's
        job = response_job(body, messages)
        record = {
            "id": response_id,
            "tenant": tenant.name,
            "created_at": int(time.time()),
            "model": body.model or self._registry.default.name,
            "request": asked_of(body),
            "input_items": items,
            "history": history,
        }
        if conversation is not None:  # its worker adds the turn to it as it ends
            record["conversation"] = conversation
        # The record travels with the job too: a worker that finds it gone (Redis back
        # empty) writes it again, so the response is found as long as its job is.
        route, routed = self._routing.route(TaskName.CHAT, response_id, {**job, "record": record}, tenant)
        return record, route, routed

    async def opened(
        self, tenant: Tenant, body: ResponsesRequest, history: list[dict[str, Any]] | None
    ) -> tuple[dict[str, Any], JobRoute, AsyncIterator[dict[str, Any]]]:
        """A response streamed to a WebSocket (api/openai/responses/websocket.py): its record,
        route and its job's events, queued (errors up to its acceptance raised). `history`
        as for `_made`. A response not stored is the caller's to forget as it ends."""
        record, route, routed = await self._made(tenant, body, None, history)
        events = await open_stream(self._runner, route, routed)
        return await self._records.save(route.key, record), route, events

    async def conversation(self, tenant: Tenant, previous_id: str) -> list[dict[str, Any]]:
        """The conversation the tenant's stored response `previous_id` ended with (404 for
        one it does not have, 400 for one not finished)."""
        return await self._history(tenant, previous_id)

    async def forget(self, key: str) -> None:
        """Everything a response left in Redis (``store: false``, read to its end)."""
        await self._records.forget(key)

    async def _history(self, tenant: Tenant, previous_id: str) -> list[dict[str, Any]]:
        """The conversation `previous_id` ended with: its history, its input, its output."""
        key = job_key(tenant.name, previous_id)
        previous, status = await self._state(key)
        if previous is None or status is None:
            raise ResponseNotFound(f"previous_response_id: no response {previous_id!r}")
        if status["status"] != JobStatus.SUCCEEDED:
            state = STATUSES.get(status["status"], status["status"])
            raise BadRequest(f"previous_response_id: response {previous_id!r} is {state}; only a finished one goes on")
        return conversation_after(previous, status["result"])

    async def _state(self, key: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """The response's record and its job's status: Redis's, else the file store's."""
        record = await self._records.load(key)
        if record is None:
            return None, None
        return record, await self._jobs.status(key) or await self._records.ended(key)

    async def _found(self, key: str, response_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """The response's record and its job's status; 404 when either is gone."""
        record, status = await self._state(key)
        if record is None or status is None:
            raise not_found(response_id)
        return record, status

    async def retrieve(
        self, key: str, response_id: str, stream: bool, starting_after: int | None, timing: Timing
    ) -> dict[str, Any] | Response:
        record, status = await self._found(key, response_id)
        if not stream:
            return self._object(record, status)
        # Followed as its owner's job (an admin may read another tenant's), never queued
        # again; a reader that leaves does not cancel it (not the response's own request).
        owner = self._tenants.get(record["tenant"])
        route, _ = self._routing.route(TaskName.CHAT, response_id, {"meta": {"model": record["model"]}}, owner)
        if status.get("kept") and JobStatus(status["status"]).finished:
            events = _kept_end(status)  # Redis lost its job: its end, as the file store kept it
        else:
            events = await open_stream(self._runner, route, None, leaving_cancels=False)
        return self._streamed(route, record, events, starting_after, forget=False, timing=timing)

    def _object(self, record: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        state = status["status"]
        if state == JobStatus.SUCCEEDED:
            done = status.get("finished_at")
            at = datetime.fromisoformat(done).timestamp() if isinstance(done, str) else None
            return response_object(record, "completed", status["result"], completed_at=at)
        error = None
        if state == JobStatus.FAILED:
            failure = status.get("error") or {}
            error = {"code": error_code(int(failure.get("status_code") or 500)), "message": failure.get("message", "")}
        return response_object(record, STATUSES.get(state, state), error=error)

    def _streamed(
        self,
        route: Any,
        record: dict[str, Any],
        events: AsyncIterator[dict[str, Any]],
        after: int | None,
        forget: bool,
        timing: Timing,
    ) -> Response:
        renderer = ResponseEvents(record)
        if forget:
            events = self._then_forget(events, route.key)
        return stream_response(
            self._runner,
            route,
            events,
            renderer.render,
            renderer.failed,
            after,
            opening=renderer.opening,
            timing=timing,
        )

    async def _then_forget(self, events: AsyncIterator[dict[str, Any]], key: str) -> AsyncIterator[dict[str, Any]]:
        async for event in events:
            yield event
            if "end" in event:
                await self._records.forget(key)

    async def cancel(self, key: str, response_id: str) -> dict[str, Any]:
        record, status = await self._found(key, response_id)
        if not JobStatus(status["status"]).finished:
            await self._cancelled(key, response_id)
            status = await self._jobs.status(key) or status
            await self._records.keep_end(key, status)
        elif status["status"] != JobStatus.CANCELLED:
            state = STATUSES.get(status["status"], status["status"])
            raise BadRequest(f"response {response_id!r} is {state}: only a queued or running one can be cancelled")
        return self._object(record, status)

    async def _cancelled(self, key: str, response_id: str) -> None:
        """Cancel the response; a background one's webhooks hear of it."""
        if await self._runner.cancel(key) != CancelOutcome.CANCELLED or not self._events.for_responses:
            return
        if await self._jobs.notified(key):
            try:
                await self._events.emit("response.cancelled", response_id)
            except GatewayError as exc:  # cancelled all the same
                log.warning("response %s cancelled, but its webhook event was not queued: %s", response_id, exc)

    async def delete(self, key: str, response_id: str) -> dict[str, Any]:
        _, status = await self._found(key, response_id)
        if not JobStatus(status["status"]).finished:
            await self._cancelled(key, response_id)
        await self._records.forget(key)
        return {"id": response_id, "object": "response.deleted", "deleted": True}

    async def input_items(
        self, key: str, response_id: str, order: str, limit: int, after: str | None
    ) -> dict[str, Any]:
        record, _ = await self._found(key, response_id)
        items = list(record["input_items"])
        if order == "desc":
            items.reverse()
        if after is not None:
            ids = [item["id"] for item in items]
            items = items[ids.index(after) + 1 :] if after in ids else []
        page = items[:limit]
        return {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else "",
            "last_id": page[-1]["id"] if page else "",
            "has_more": len(items) > limit,
        }


async def _kept_end(status: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    """A finished response's stream when only the file store knows how it ended: its
    answer in one piece (as a stream read after STREAM_TTL), or its failure."""
    state = status["status"]
    if state == JobStatus.SUCCEEDED:
        answer, done = status["result"], status.get("finished_at")
        at = datetime.fromisoformat(done).timestamp() if done else None
        # As api/jobs/answers.py reads a result whose stream is gone: each choice's text whole.
        for choice in answer.get("choices") or [{"index": 0, "content": answer.get("content")}]:
            yield {"index": choice["index"], "text": choice.get("content") or "", "at": at, "whole": True}
        yield {"end": answer, "at": at, "whole": True}
    elif state == JobStatus.CANCELLED:
        raise JobCancelled("the response was cancelled")
    else:
        error = status.get("error") or {}
        raise JobFailed(str(error.get("message", "")), int(error.get("status_code") or 500))


def not_found(response_id: str) -> ResponseNotFound:
    return ResponseNotFound(f"no response {response_id!r}: never made, deleted, or expired")
