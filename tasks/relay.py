"""Relaying a streamed job's answer to the API, piece by piece, through a Redis stream.

The stream ``{REDIS_PREFIX}:stream:{job_id}`` holds one entry per piece (``i``: the
choice, ``t``: the text, ``x``: JSON of the tool-call pieces and logprobs it brought,
when it did) and a last entry ``end`` (JSON: choices with their
finish_reason, model, usage). A reader that connects late, or again, reads it from
the start. While the job may run it is kept long enough for a run after a worker died
to go on from it; once its end is relayed, STREAM_TTL (a resume is all it serves
then: the answer is the job's result, kept RESULT_TTL).

A job run again after its worker died mid-answer finds the pieces that run relayed:
readers have had them, so they stay, and this run relays its own only past them
(the first as many pieces of each choice are not relayed again). Its answer is what
its readers were sent: the earlier run's pieces, then this run's. With temperature 0
that is the answer either run gives; with sampling, the words after the seam are the
second run's.

Relaying is never what fails a job: pieces that Redis does not take (it is away,
restarting) wait in the worker and go with the next; the end waits for Redis up to
RELAY_PATIENCE seconds, and past that the readers take the rest of the answer from
its result (api/jobs/answers.py).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import redis

from shared.contract import RELAY_ADD, STREAM_END, STREAM_EXTRA, STREAM_INDEX, STREAM_TEXT
from shared.storage import redis_clients

log = logging.getLogger(__name__)

_INDEX, _TEXT, _END = STREAM_INDEX.encode(), STREAM_TEXT.encode(), STREAM_END.encode()
RELAY_PATIENCE = 20.0  # seconds the start and the end of a stream wait for a Redis away


class Relay:
    """Writes the pieces of one job's answer as they arrive."""

    def __init__(self, client: redis.Redis, key: str, ttl: int, kept: int | None = None) -> None:
        """`ttl`: the stream's seconds while the job runs; `kept`: once its end is relayed
        (`ttl` when not given)."""
        self._client = client
        self._key = key
        self._ttl = ttl
        self._kept = ttl if kept is None else kept
        self._add = client.register_script(RELAY_ADD)
        self._length = 0  # the stream's entries, as this relay knows them
        self._lost = False  # Redis lost the stream as it ran: its readers read the answer from its result
        # What an earlier run relayed, per choice: its pieces' texts; and how many
        # pieces of each choice this run has produced.
        self._earlier: dict[int, list[str]] = {}
        self._produced: dict[int, int] = {}
        self._after_seam: dict[int, list[str]] = {}
        self._unsent: list[dict[str, Any]] = []  # pieces Redis did not take yet

    def resume(self) -> None:
        """Read what an earlier run of this job relayed, if one did (one read; waits for a
        Redis away, up to RELAY_PATIENCE)."""
        for _, fields in redis_clients.patiently(lambda: self._client.xrange(self._key), RELAY_PATIENCE):
            self._length += 1
            if _END in fields:
                continue
            self._earlier.setdefault(int(fields[_INDEX]), []).append(fields[_TEXT].decode())

    def delta(self, index: int, text: str, extra: dict[str, Any] | None = None) -> None:
        earlier = self._earlier.get(index)
        if earlier is not None:
            produced = self._produced[index] = self._produced.get(index, 0) + 1
            if produced <= len(earlier):
                return  # its readers had this piece from the earlier run
            self._after_seam.setdefault(index, []).append(text)
        fields: dict[str, Any] = {STREAM_INDEX: str(index), STREAM_TEXT: text}
        if extra:
            fields[STREAM_EXTRA] = json.dumps(extra)
        self._unsent.append(fields)
        try:
            self._flush()
        except redis_clients.UNREACHABLE as exc:
            if len(self._unsent) == 1:
                log.warning("pieces of %s wait to be relayed: %s", self._key, exc)

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
        self._unsent.append({STREAM_END: json.dumps(answer)})
        self._ttl = self._kept  # set with the end, as it is added
        try:
            redis_clients.patiently(self._flush, RELAY_PATIENCE)
        except redis_clients.UNREACHABLE as exc:
            # The answer is the job's all the same: its result is stored (and retried) apart.
            log.warning("the end of %s not relayed (%s): its readers read the rest from its result", self._key, exc)

    def _flush(self) -> None:
        """Relay the pieces not relayed yet, in order, once each (one round trip)."""
        if self._lost:
            self._unsent.clear()
            return
        entries = [json.dumps(fields, ensure_ascii=False) for fields in self._unsent]
        added = int(self._add(keys=[self._key], args=[self._ttl, self._length, *entries]))
        if added < 0:
            self._lost = True
            log.warning(
                "the stream %s was lost as it was relayed: its readers read the answer from its result", self._key
            )
        self._length += len(entries)
        self._unsent.clear()
