"""A job's answer as the worker left it: whole, in its stored result (`outcome`), or in
pieces, in its Redis stream (`read_stream`), as the worker relays them."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from api.errors import JobCancelled, JobFailed, ResultStoreUnavailable, job_failure
from shared.contract import STREAM_END, STREAM_EXTRA, STREAM_INDEX, STREAM_TEXT, State, whole_answer

log = logging.getLogger(__name__)

# A streamed answer's entries, as the worker writes them (the contract's).
INDEX, TEXT, END, EXTRA = (name.encode() for name in (STREAM_INDEX, STREAM_TEXT, STREAM_END, STREAM_EXTRA))
STREAM_POLL_MS = 200  # how long one read of a job's stream waits for a new piece
RETRY_DELAYS = (0.05, 0.1, 0.25, 0.5, 1.0)  # between reads of a stream while Redis is down


def outcome(job_id: str, meta: dict[str, Any]) -> dict[str, Any]:
    """The result of a finished job, or the failure it ended with (raised)."""
    status = meta.get("status")
    result = meta.get("result")
    if status == State.SUCCESS and isinstance(result, dict):
        return whole_answer(result)
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
    reader: aioredis.Redis,
    stream_key: str,
    job_id: str,
    result: asyncio.Future[dict[str, Any]],
    outage: float = 0.0,
    turns: asyncio.Semaphore | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """The answer's pieces from the start, ``{"index", "text"[, "extra"], "at"}`` each,
    then ``{"end": answer, "at"}`` (`at`: when the worker wrote it, in seconds: the
    same for every reader); a job that failed raises its failure. `result` is the job's
    stored result as the waiter hands it out: a job that finished without writing its
    stream (it ran unstreamed: a job_id sent before without ``stream``), or without its
    end (Redis was down as the worker wrote it), is answered from it: the text not read
    yet, in one piece per choice. While Redis cannot be read, the reader waits for it
    as any waiter does, up to `outage` seconds in a row. Events read from the result
    while the stream held nothing (gone after STREAM_TTL, or never written) are marked
    ``"whole": True``: their places are not the stream's. With `turns`, each read takes
    its turn (first come, first served) among the process's readers: as many read at
    once as `turns` allows, the connections of the readers' pool."""
    last = "0-0"  # from the start: a late or returning reader misses nothing
    read: dict[int, str] = {}  # each choice's text so far
    down_since: float | None = None
    for attempt in itertools.count():
        try:
            async with turns or contextlib.nullcontext():
                entries = await reader.xread({stream_key: last}, block=STREAM_POLL_MS, count=256)
            down_since = None
        except (RedisError, OSError) as exc:
            now = time.monotonic()
            down_since = now if down_since is None else down_since
            if now - down_since >= outage:
                raise ResultStoreUnavailable("result store (Redis) unavailable") from None
            if now == down_since:
                log.warning("reading the stream of job %s: %s; waiting for Redis", job_id, exc)
            await asyncio.sleep(RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)])
            continue
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
                read[piece["index"]] = read.get(piece["index"], "") + piece["text"]
                yield piece
        if not entries and result.done():
            # Finished without an end entry: it failed or was cancelled (raised here), or
            # it ran unstreamed, or its end could not be written.
            meta = result.result()
            answer = outcome(job_id, meta)
            at = _seconds(meta.get("date_done"))
            mark = {"whole": True} if last == "0-0" else {}
            for choice in answer.get("choices") or [{"index": 0, "content": answer["content"]}]:
                text, had = choice["content"] or "", read.get(choice["index"], "")
                rest = text[len(had) :] if text.startswith(had) else ""
                if rest or choice["index"] not in read:
                    yield {"index": choice["index"], "text": rest, "at": at, **mark}
            yield {"end": answer, "at": at, **mark}
            return


def _seconds(iso: Any) -> float:
    try:
        return datetime.fromisoformat(str(iso)).timestamp()
    except ValueError:
        return 0.0
