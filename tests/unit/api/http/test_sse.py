"""Answers streamed as server-sent events (api/http/sse.py): every event numbered from
0, a returning client given only what it had not, a failure after the first byte one
last event; the runner closing the events is the real one (tests/unit/api/edge.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi.responses import StreamingResponse

from api.errors import ModelNotFound
from api.http.sse import last_event_id, sse, stream_response
from api.http.statuses import Refusal
from api.jobs.route import JobRoute
from api.observability.metrics import Metrics
from api.observability.server_timing import Timing
from shared.tenants import Tenant
from tests.unit.api.edge import running_parts

pytestmark = pytest.mark.unit

ROUTE = JobRoute("llm.generate", "j1", "j1", Tenant("default"), "m", "m", "q")


def test_an_event_is_its_name_and_compact_json() -> None:
    assert sse({"a": [1, 2]}) == 'data: {"a":[1,2]}\n\n'
    assert sse("x", "done") == 'event: done\ndata: "x"\n\n'


@pytest.mark.parametrize(("given", "seen"), [(None, None), ("", None), (" 4 ", 4), ("0", 0), ("-1", None),
                                             ("abc", None)])  # fmt: skip
def test_a_last_event_id_not_of_ours_starts_from_the_beginning(given: str | None, seen: int | None) -> None:
    assert last_event_id(given) == seen


def render(event: dict[str, Any]) -> list[str]:
    return [sse({"end": True}, "done")] if "end" in event else [sse(event["text"])]


def render_error(refused: Refusal) -> str:
    return sse({"status": refused.status, "detail": refused.message}, "error")


async def events_of(*events: dict[str, Any], failure: Exception | None = None) -> AsyncIterator[dict[str, Any]]:
    for event in events:
        yield event
    if failure is not None:
        raise failure


async def body(response: StreamingResponse) -> list[str]:
    return [part async for part in response.body_iterator]  # type: ignore[misc]


PIECES = ({"index": 0, "text": "a"}, {"index": 0, "text": "b"}, {"end": {"content": "ab"}})


def test_every_event_has_its_place_and_a_returning_client_gets_the_ones_after_its_last() -> None:
    async def main() -> None:
        async with running_parts() as parts:
            whole = await body(stream_response(parts.runner, ROUTE, events_of(*PIECES), render, render_error))
            assert whole == [
                'id: 0\ndata: "a"\n\n',
                'id: 1\ndata: "b"\n\n',
                'id: 2\nevent: done\ndata: {"end":true}\n\n',
            ]
            resumed = await body(stream_response(parts.runner, ROUTE, events_of(*PIECES), render, render_error, 0))
            assert resumed == whole[1:]
            # A client that had every event gets the last again: its stream ends as every stream does.
            had_all = await body(stream_response(parts.runner, ROUTE, events_of(*PIECES), render, render_error, 7))
            assert had_all == whole[-1:]

    asyncio.run(main())


def test_a_failure_after_the_first_byte_is_one_last_event_with_its_status() -> None:
    async def main() -> None:
        async with running_parts() as parts:
            failing = events_of(PIECES[0], failure=ModelNotFound("no model 'x'"))
            sent = await body(stream_response(parts.runner, ROUTE, failing, render, render_error))
            assert sent[-1] == 'id: 1\nevent: error\ndata: {"status":404,"detail":"no model \'x\'"}\n\n'

    asyncio.run(main())


def test_a_resume_whose_events_are_gone_is_told_where_its_answer_is() -> None:
    async def main() -> None:
        async with running_parts() as parts:
            gone = events_of({"index": 0, "text": "ab", "whole": True}, {"end": {}, "whole": True})
            sent = await body(stream_response(parts.runner, ROUTE, gone, render, render_error, 3))
            assert len(sent) == 1 and "event: error" in sent[0] and "/jobs/j1" in sent[0] and "404" in sent[0]

    asyncio.run(main())


def test_the_opening_events_come_first_and_the_timing_is_counted_as_the_stream_ends() -> None:
    async def main() -> None:
        async with running_parts() as parts:
            metrics = Metrics()
            timing = Timing(0.0, metrics=metrics)
            end = {"end": {"content": "ab", "timing": {"queued_seconds": 0.0, "model_seconds": 0.0}}}
            response = stream_response(parts.runner, ROUTE, events_of(PIECES[0], end), render, render_error,
                                       opening=lambda: [sse("hello")], timing=timing)  # fmt: skip
            assert response.headers["x-job-id"] == "j1" and response.media_type == "text/event-stream"
            sent = await body(response)
            assert sent[0] == 'id: 0\ndata: "hello"\n\n' and len(sent) == 3
            assert timing.job == ROUTE.log_context()
            assert metrics.registry.get_sample_value("llm_api_gateway_overhead_seconds_count", {"model": "m"}) == 1

    asyncio.run(main())
