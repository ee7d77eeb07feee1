"""A job's answer as the worker left it (api/jobs/answers.py): its stored result read as
an answer or raised as its failure, and its stream read piece by piece, finished from
the stored result when the stream has no end; in a fake Redis (tests/unit/api/edge.py)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from api.errors import JobCancelled, JobFailed, ResultStoreUnavailable
from api.jobs.answers import outcome, read_stream
from shared.contract import STREAM_END, STREAM_EXTRA, STREAM_INDEX, STREAM_TEXT, cancelled_result
from tests.unit.api.edge import FakeRedis

pytestmark = pytest.mark.unit

ANSWER = {"content": "ab", "finish_reason": "stop", "choices": [{"index": 0, "content": "ab", "finish_reason": "stop"},
                                                                 {"index": 1, "content": "xy"}]}  # fmt: skip


def test_a_stored_result_is_the_answer_stored_once_read_whole() -> None:
    stored = {"choices": ANSWER["choices"]}  # its first choice not repeated at its top
    assert outcome("j", {"status": "SUCCESS", "result": stored})["content"] == "ab"


def test_a_stored_failure_or_cancellation_is_raised() -> None:
    failed = {"status": "FAILURE", "result": {"exc_type": "ModelServerTimeout", "exc_message": ["slow"],
                                              "exc_module": "shared.contract"}}  # fmt: skip
    with pytest.raises(JobFailed, match="slow") as raised:
        outcome("j", failed)
    assert raised.value.status == 504
    with pytest.raises(JobCancelled, match="job j was cancelled"):
        outcome("j", json.loads(cancelled_result("j", 0.0)))
    with pytest.raises(JobFailed, match="unreadable result"):
        outcome("j", {"status": "SUCCESS", "result": "not an answer"})


def read(redis: FakeRedis, result: asyncio.Future[dict[str, Any]], outage: float = 0.0) -> Any:
    async def collect() -> list[dict[str, Any]]:
        return [event async for event in read_stream(redis, "stream:j", "j", result, outage)]  # type: ignore[arg-type]

    return collect()


def test_a_stream_is_read_from_its_start_with_each_pieces_extra_and_its_end() -> None:
    async def main() -> None:
        redis = FakeRedis()
        redis.xadd_now("stream:j", {STREAM_INDEX: 0, STREAM_TEXT: "a"})
        redis.xadd_now("stream:j", {STREAM_INDEX: 0, STREAM_TEXT: "b", STREAM_EXTRA: json.dumps({"logprobs": 1})})
        redis.xadd_now("stream:j", {STREAM_END: json.dumps(ANSWER)})
        events = await read(redis, asyncio.get_running_loop().create_future())
        assert [(e.get("text"), e.get("extra")) for e in events[:2]] == [("a", None), ("b", {"logprobs": 1})]
        assert events[2]["end"] == ANSWER and all(e["at"] > 0 for e in events)

    asyncio.run(main())


def test_a_stream_without_its_end_is_finished_from_the_stored_result_with_what_was_not_read() -> None:
    async def main() -> None:
        redis = FakeRedis()
        redis.xadd_now("stream:j", {STREAM_INDEX: 0, STREAM_TEXT: "a"})  # then Redis lost the rest
        result = asyncio.get_running_loop().create_future()
        result.set_result({"status": "SUCCESS", "result": ANSWER, "date_done": "2030-01-01T00:00:00+00:00"})
        events = await read(redis, result)
        assert [(e.get("index"), e.get("text")) for e in events[:3]] == [(0, "a"), (0, "b"), (1, "xy")]
        assert events[3]["end"]["content"] == "ab" and "whole" not in events[3]

    asyncio.run(main())


def test_a_job_that_ran_unstreamed_is_one_piece_per_choice_marked_whole() -> None:
    async def main() -> None:
        result = asyncio.get_running_loop().create_future()
        result.set_result({"status": "SUCCESS", "result": {"content": "all", "finish_reason": "stop"}})
        events = await read(FakeRedis(), result)
        assert events == [{"index": 0, "text": "all", "at": 0.0, "whole": True},
                          {"end": {"content": "all", "finish_reason": "stop"}, "at": 0.0, "whole": True}]  # fmt: skip

    asyncio.run(main())


def test_a_stream_that_cannot_be_read_past_the_outage_allowed_is_a_503() -> None:
    async def main() -> None:
        redis = FakeRedis()
        redis.down = True
        with pytest.raises(ResultStoreUnavailable):
            await read(redis, asyncio.get_running_loop().create_future(), outage=0.0)

    asyncio.run(main())
