"""A streamed job's pieces relayed through a real Redis while it fails to answer:
each piece is in the stream once, in order, and the job is never failed for it."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import redis

from tasks.relay import Relay

pytestmark = pytest.mark.integration


class _Flaky(redis.Redis):
    """A client whose writes run, and whose next `lose` answers are lost on the way back
    (a connection dropped as Redis stops); the next `refuse` writes are refused before
    they run (Redis down)."""

    lose = 0
    refuse = 0

    def flaky(self, write: Any) -> Any:
        if self.refuse:
            self.refuse -= 1
            raise redis.ConnectionError("Error 111 connecting. Connection refused.")
        answer = write()
        if self.lose:
            self.lose -= 1
            raise redis.ConnectionError("Connection closed by server.")
        return answer

    def execute_command(self, *args: Any, **options: Any) -> Any:
        if args[0] in ("EVALSHA", "XADD"):
            return self.flaky(lambda: super(_Flaky, self).execute_command(*args, **options))
        return super().execute_command(*args, **options)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)
        execute = pipe.execute
        pipe.execute = lambda *args: self.flaky(lambda: execute(*args))  # type: ignore[method-assign]
        return pipe


def test_pieces_whose_answer_was_lost_or_refused_are_relayed_once_each_in_order(
    redis_address: tuple[str, int],
) -> None:
    client = _Flaky(host=redis_address[0], port=redis_address[1])
    key = f"test-relay-{uuid.uuid4().hex[:8]}:stream:job"
    try:
        relay = Relay(client, key, 60, 20)
        relay.resume()
        relay.delta(0, "one")
        client.lose = 1
        relay.delta(0, " two")  # written, its answer lost: kept to send again
        client.refuse = 1
        relay.delta(0, " three")  # refused before it ran
        relay.delta(0, " four")
        client.lose = 1
        relay.end({"content": "one two three four", "choices": [{"index": 0, "content": "one two three four"}]})
        entries = [fields for _, fields in client.xrange(key)]
        assert [f[b"t"].decode() for f in entries if b"t" in f] == ["one", " two", " three", " four"]
        assert b"end" in entries[-1] and len(entries) == 5
        assert 0 < client.ttl(key) <= 20  # its end shortened it
    finally:
        client.delete(key)
        client.close()
