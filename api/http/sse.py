"""Answers streamed as server-sent events, piece by piece, while the worker produces them.

A client that goes away before the end cancels its job, as ``DELETE /jobs/{id}`` does.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from fastapi import HTTPException
from fastapi.responses import StreamingResponse

from api.jobs.runner import JobRunner
from shared.tenants import Tenant

Render = Callable[[dict[str, Any]], Iterable[str]]

_abandoned: set[asyncio.Task[None]] = set()


def sse(data: Any, event: str | None = None) -> str:
    """One server-sent event."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n"


async def open_stream(
    runner: JobRunner, task: str, job_id: str, job: dict[str, Any], tenant: Tenant
) -> AsyncIterator[dict[str, Any]]:
    """Queue `tenant`'s job for streaming; errors up to its acceptance raise as HTTP
    errors, before any byte is sent."""
    events = runner.stream(task, job_id, job, tenant=tenant)
    await anext(events)
    return events


def stream_response(
    runner: JobRunner,
    tenant: Tenant,
    job_id: str,
    events: AsyncIterator[dict[str, Any]],
    render: Render,
    render_error: Callable[[HTTPException], str],
) -> StreamingResponse:
    """The events of `tenant`'s job as an SSE response; the job is cancelled if the client
    leaves before the end."""
    key = runner.key_of(tenant, job_id)

    async def body() -> AsyncIterator[str]:
        finished = False
        try:
            async for event in events:
                for text in render(event):
                    yield text
            finished = True
        except HTTPException as exc:
            finished = True
            yield render_error(exc)
        finally:
            if not finished:
                task = asyncio.create_task(_abandon(runner, key))
                _abandoned.add(task)
                task.add_done_callback(_abandoned.discard)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "X-Job-Id": job_id}
    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)


async def _abandon(runner: JobRunner, key: str) -> None:
    await runner.cancel(key)
