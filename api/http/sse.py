"""Answers streamed as server-sent events, piece by piece, while the worker produces them.

Every event has an id (SSE ``id:``): its place in the stream, from 0. The events are
rendered from the job's Redis stream, which holds every piece from the first, so the
same events come in the same order to every reader: a client whose connection dropped
asks again with ``Last-Event-ID`` (or a response's ``starting_after``) and gets each
later event once; one that had every event gets the last again, so that its stream
ends as every stream does. A foreground stream's own request that leaves before the
end cancels its job after STREAM_LEAVE_GRACE seconds, unless it (or another) reads
the stream again by then; a reader of a job queued in the background never does.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from fastapi.responses import StreamingResponse

from api.errors import GatewayError, StreamExpired
from api.http.statuses import Refusal, refusal
from api.jobs.route import JobRoute
from api.jobs.runner import JobRunner
from api.observability.server_timing import Timing

Render = Callable[[dict[str, Any]], Iterable[str]]


def sse(data: Any, event: str | None = None) -> str:
    """One server-sent event (its id is added as it is sent)."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n"


def last_event_id(value: str | None) -> int | None:
    """The place of the last event a client had (``Last-Event-ID``), or None: from the start."""
    if value is None or not value.strip():
        return None
    try:
        seen = int(value.strip())
    except ValueError:
        return None  # not one of ours: from the start
    return seen if seen >= 0 else None


async def open_stream(
    runner: JobRunner,
    route: JobRoute,
    job: dict[str, Any] | None,
    leaving_cancels: bool = True,
    background: bool = False,
    notify: bool | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """Queue the job for streaming (None: follow the job queued before); errors up to
    its acceptance are raised, before any byte is sent (and answered as any error is).
    Without `leaving_cancels` (a reader that is not the stream's own request), a reader
    that leaves never cancels the job; nor does one of a job queued in the `background`
    (its end sent to the webhooks as `notify` says: JobRunner.stream)."""
    events = runner.stream(route, job, leaving_cancels, background, notify)
    await anext(events)
    return events


def stream_response(
    runner: JobRunner,
    route: JobRoute,
    events: AsyncIterator[dict[str, Any]],
    render: Render,
    render_error: Callable[[Refusal], str],
    after: int | None = None,
    opening: Callable[[], Iterable[str]] | None = None,
    timing: Timing | None = None,
) -> StreamingResponse:
    """The events of the job as an SSE response, each with its id, those up to `after`
    (the last a returning client had) left out; `opening`'s events first. A failure
    after the first byte is one last event. A client that had every event (`after` at
    or past the end) gets the last one again: its stream ends as every stream does;
    one whose stream's events are gone (STREAM_TTL after its end) gets one error event
    (StreamExpired) that says where its answer is.
    The request's `timing` is told of the job's answer, and counted, as the stream ends."""

    async def body() -> AsyncIterator[str]:
        place = -1
        last = ""  # the last event, numbered

        def numbered(texts: Iterable[str]) -> Iterable[str]:
            nonlocal place, last
            for text in texts:
                place += 1
                last = f"id: {place}\n{text}"
                if after is None or place > after:
                    yield last

        try:
            if opening is not None:
                for text in numbered(opening()):
                    yield text
            async for event in events:
                if after is not None and event.get("whole"):
                    # Its places would not be those the client counted: a clear end instead.
                    raise StreamExpired(
                        f"the events of job {route.job_id} are no longer kept (STREAM_TTL seconds after the stream's"
                        f" end): its answer is at /jobs/{route.job_id}, or sent whole to the request without"
                        " Last-Event-ID"
                    )
                if timing is not None and "end" in event:
                    timing.ran(route, event["end"])
                    timing.ended(time.perf_counter())
                for text in numbered(render(event)):
                    yield text
        except GatewayError as exc:
            for text in numbered([render_error(refusal(exc))]):
                yield text
        finally:
            # The reader's place and count are given back as the events end (runner.stream).
            runner.close_later(events)
        if after is not None and place <= after and last:
            yield last

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "X-Job-Id": route.job_id}
    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)
