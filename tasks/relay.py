"""Relaying a streamed job's answer to the API, piece by piece, through a Redis stream.

The stream ``{REDIS_PREFIX}:stream:{job_id}`` holds one entry per piece (``i``: the
choice, ``t``: the text, ``x``: JSON of the tool-call pieces and logprobs it brought,
when it did) and a last entry ``end`` (JSON: choices with their
finish_reason, model, usage). A reader that connects late, or again, reads it from
the start. It expires with the job's result.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from shared.contract import STREAM_END, STREAM_EXTRA, STREAM_INDEX, STREAM_TEXT


class Relay:
    """Writes the pieces of one job's answer as they arrive."""

    def __init__(self, client: redis.Redis, key: str, ttl: int) -> None:
        self._client = client
        self._key = key
        self._ttl = ttl
        self._started = False

    def delta(self, index: int, text: str, extra: dict[str, Any] | None = None) -> None:
        fields: dict[str, Any] = {STREAM_INDEX: index, STREAM_TEXT: text}
        if extra:
            fields[STREAM_EXTRA] = json.dumps(extra)
        self._add(fields)

    def end(self, answer: dict[str, Any]) -> None:
        """The answer whole (as the task returns it, with its timing): the stream's last entry."""
        self._add({STREAM_END: json.dumps(answer)})

    def _add(self, fields: dict[str, Any]) -> None:
        if self._started:
            self._client.xadd(self._key, fields)
            return
        with self._client.pipeline(transaction=False) as pipe:
            pipe.xadd(self._key, fields).expire(self._key, self._ttl)
            pipe.execute()
        self._started = True
