"""Answers streamed as server-sent events, piece by piece, while the worker produces them.

A client that goes away before the end cancels its job, as ``DELETE /jobs/{id}`` does.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from fastapi.responses import StreamingResponse

from api.errors import GatewayError
from api.http.statuses import Refusal, refusal
from api.jobs.route import JobRoute
from api.jobs.runner import JobRunner

Render = Callable[[dict[str, Any]], Iterable[str]]

_abandoned: set[asyncio.Task[None]] = set()


def sse(data: Any, event: str | None = None) -> str:
    """One server-sent event."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n"


async def open_stream(runner: JobRunner, route: JobRoute, job: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    """Queue the job for streaming; errors up to its acceptance are raised, before any
    byte is sent (and answered as any error is)."""
    events = runner.stream(route, job)
    await anext(events)
    return events


def stream_response(
    runner: JobRunner,
    route: JobRoute,
    events: AsyncIterator[dict[str, Any]],
    render: Render,
    render_error: Callable[[Refusal], str],
) -> StreamingResponse:
    """The events of the job as an SSE response; the job is cancelled if the client
    leaves before the end. A failure after the first byte is one last event."""
    key = route.key

    async def body() -> AsyncIterator[str]:
        finished = False
        try:
            async for event in events:
                for text in render(event):
                    yield text
            finished = True
        except GatewayError as exc:
            finished = True
            yield render_error(refusal(exc))
        finally:
            if not finished:
                task = asyncio.create_task(_abandon(runner, key))
                _abandoned.add(task)
                task.add_done_callback(_abandoned.discard)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "X-Job-Id": route.job_id}
    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)


async def _abandon(runner: JobRunner, key: str) -> None:
    await runner.cancel(key)
