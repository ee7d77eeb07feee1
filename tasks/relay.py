"""Relaying a streamed job's answer to the API, piece by piece, through a Redis stream.

The stream ``{REDIS_PREFIX}:stream:{job_id}`` holds one entry per piece (``i``: the
choice, ``t``: the text, ``x``: JSON of the tool-call pieces and logprobs it brought,
when it did) and a last entry ``end`` (JSON: choices with their
finish_reason, model, usage). A reader that connects late, or again, reads it from
the start. It expires with the job's result.

A job run again after its worker died mid-answer finds the pieces that run relayed:
readers have had them, so they stay, and this run relays its own only past them
(the first as many pieces of each choice are not relayed again). Its answer is what
its readers were sent: the earlier run's pieces, then this run's. With temperature 0
that is the answer either run gives; with sampling, the words after the seam are the
second run's.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from shared.contract import STREAM_END, STREAM_EXTRA, STREAM_INDEX, STREAM_TEXT

_INDEX, _TEXT, _END = STREAM_INDEX.encode(), STREAM_TEXT.encode(), STREAM_END.encode()


class Relay:
    """Writes the pieces of one job's answer as they arrive."""

    def __init__(self, client: redis.Redis, key: str, ttl: int) -> None:
        self._client = client
        self._key = key
        self._ttl = ttl
        self._started = False
        # What an earlier run relayed, per choice: its pieces' texts; and how many
        # pieces of each choice this run has produced.
        self._earlier: dict[int, list[str]] = {}
        self._produced: dict[int, int] = {}
        self._after_seam: dict[int, list[str]] = {}

    def resume(self) -> None:
        """Read what an earlier run of this job relayed, if one did (one read)."""
        for _, fields in self._client.xrange(self._key):
            if _END in fields:
                continue
            self._earlier.setdefault(int(fields[_INDEX]), []).append(fields[_TEXT].decode())
            self._started = True

    def delta(self, index: int, text: str, extra: dict[str, Any] | None = None) -> None:
        earlier = self._earlier.get(index)
        if earlier is not None:
            produced = self._produced[index] = self._produced.get(index, 0) + 1
            if produced <= len(earlier):
                return  # its readers had this piece from the earlier run
            self._after_seam.setdefault(index, []).append(text)
        fields: dict[str, Any] = {STREAM_INDEX: index, STREAM_TEXT: text}
        if extra:
            fields[STREAM_EXTRA] = json.dumps(extra)
        self._add(fields)

    def end(self, answer: dict[str, Any]) -> None:
        """The answer whole (as the task returns it, with its timing): the stream's last
        entry. After an earlier run's pieces, its text is made what was relayed."""
        if self._earlier:
            for choice in answer.get("choices") or []:
                earlier = self._earlier.get(choice.get("index", 0))
                if earlier is not None:
                    choice["content"] = "".join(earlier) + "".join(self._after_seam.get(choice["index"], []))
            if answer.get("choices"):
                answer["content"] = answer["choices"][0]["content"]
        self._add({STREAM_END: json.dumps(answer)})

    def _add(self, fields: dict[str, Any]) -> None:
        if self._started:
            self._client.xadd(self._key, fields)
            return
        with self._client.pipeline(transaction=False) as pipe:
            pipe.xadd(self._key, fields).expire(self._key, self._ttl)
            pipe.execute()
        self._started = True
