"""A job's answer as the worker left it: whole, in its stored result (`outcome`), or in
pieces, in its Redis stream (`read_stream`), as the worker relays them."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from api.errors import JobCancelled, JobFailed, ResultStoreUnavailable, job_failure
from shared.contract import STREAM_END, STREAM_EXTRA, STREAM_INDEX, STREAM_TEXT, State

log = logging.getLogger(__name__)

# A streamed answer's entries, as the worker writes them (the contract's).
INDEX, TEXT, END, EXTRA = (name.encode() for name in (STREAM_INDEX, STREAM_TEXT, STREAM_END, STREAM_EXTRA))
STREAM_POLL_MS = 200  # how long one read of a job's stream waits for a new piece


def outcome(job_id: str, meta: dict[str, Any]) -> dict[str, Any]:
    """The result of a finished job, or the failure it ended with (raised)."""
    status = meta.get("status")
    result = meta.get("result")
    if status == State.SUCCESS and isinstance(result, dict):
        return result
    if status == State.REVOKED:
        raise JobCancelled(f"job {job_id} was cancelled")
    if status == State.FAILURE and isinstance(result, dict):
        exc_type = str(result.get("exc_type", "Exception"))
        args = result.get("exc_message")
        error = job_failure(exc_type, args if isinstance(args, list) else [args], str(result.get("exc_module") or ""))
        log.info("job %s failed: %s: %s", job_id, exc_type, error.message)
        raise error
    raise JobFailed(f"job {job_id} ended with an unreadable result ({status})")


async def read_stream(
    reader: aioredis.Redis, stream_key: str, job_id: str, result: asyncio.Future[dict[str, Any]]
) -> AsyncIterator[dict[str, Any]]:
    """The answer's pieces from the start, ``{"index", "text"[, "extra"], "at"}`` each,
    then ``{"end": answer, "at"}`` (`at`: when the worker wrote it, in seconds: the
    same for every reader); a job that failed raises its failure. `result` is the job's
    stored result as the waiter hands it out: a job that finished without writing its
    stream (it ran unstreamed: a job_id sent before without ``stream``) is answered
    from it, in one piece per choice."""
    last = "0-0"  # from the start: a late or returning reader misses nothing
    while True:
        try:
            entries = await reader.xread({stream_key: last}, block=STREAM_POLL_MS, count=256)
        except (RedisError, OSError):
            raise ResultStoreUnavailable("result store (Redis) unavailable") from None
        for _, items in entries:
            for entry_id, fields in items:
                last = entry_id
                at = int(entry_id.split(b"-", 1)[0]) / 1000
                if END in fields:
                    yield {"end": json.loads(fields[END]), "at": at}
                    return
                piece: dict[str, Any] = {"index": int(fields[INDEX]), "text": fields[TEXT].decode(), "at": at}
                if EXTRA in fields:
                    piece["extra"] = json.loads(fields[EXTRA])
                yield piece
        if not entries and result.done():
            # Finished without an end entry: it failed or was cancelled (raised here), or
            # it ran unstreamed.
            meta = result.result()
            answer = outcome(job_id, meta)
            at = _seconds(meta.get("date_done"))
            for choice in answer.get("choices") or [{"index": 0, "content": answer["content"]}]:
                yield {"index": choice["index"], "text": choice["content"], "at": at}
            yield {"end": answer, "at": at}
            return


def _seconds(iso: Any) -> float:
    try:
        return datetime.fromisoformat(str(iso)).timestamp()
    except ValueError:
        return 0.0
