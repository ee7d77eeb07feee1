"""Fakes of the API's edge for its unit tests: Redis (the command client, the result
waiter's pub/sub connection) and the broker (Celery's ``send_task``), in process.

Only the edge is faked: the API's own parts (the job store, admission, the quotas,
the result waiter, the runner) are the real ones, built on these. The contract's Lua
scripts answer here as they do in Redis for what the unit tests need (a claim, a
cancel, a stream's readers); the scripts themselves run on a real Redis in
tests/integration/. A script the fake does not know fails loudly.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any
from unittest import mock

from kombu.exceptions import OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError

from api.http.route_class import Edge
from api.jobs import result_waiter
from api.jobs.admission import Admission
from api.jobs.queue import JobQueue
from api.jobs.requeues import Published, Requeues
from api.jobs.route import JobRouting
from api.jobs.runner import JobRunner
from api.jobs.store import JobStore
from api.observability.metrics import Metrics
from api.tenancy.fair_share import FairShare
from api.tenancy.guard import Guard, load_tenants_of
from api.tenancy.quotas import Quotas
from shared.config import Config
from shared.contract import CANCEL, CLAIM, KEPT_CLAIM, MARK_NOTIFIED, STREAM_JOIN, STREAM_LEAVE
from shared.contract.scripts import ADMIT, BATCH_LOCK_RELEASE, BATCH_LOCK_RENEW, FAIR_LOCK_RENEW, RATE_COUNT
from shared.registry import load_registry

ScriptFunction = Callable[["FakeRedis", list[str], list[Any]], Any]


def _bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, float):
        return repr(value).encode()
    return str(value).encode()


class FakeRedis:
    """Redis as the API's parts see it through redis-py's asyncio client: strings,
    hashes, sorted sets, streams, pub/sub and the contract's scripts. `down` makes every
    command fail as a lost connection does."""

    def __init__(self) -> None:
        self.strings: dict[str, bytes] = {}
        self.hashes: dict[str, dict[bytes, bytes]] = {}
        self.zsets: dict[str, dict[bytes, float]] = {}
        self.streams: dict[str, list[tuple[bytes, dict[bytes, bytes]]]] = {}
        self.published: list[tuple[str, bytes]] = []
        self.ran: list[tuple[str, list[str], list[Any]]] = []  # (script, keys, args), as run
        self.connections: list[FakePubSubConnection] = []
        self.down = False
        self.scripts: dict[str, ScriptFunction] = {
            CLAIM: _claim, CANCEL: _cancel, STREAM_JOIN: _stream_join, STREAM_LEAVE: _stream_leave,
            ADMIT: lambda redis, keys, args: None, RATE_COUNT: _rate_count, FAIR_LOCK_RENEW: lambda *_: 1,
            BATCH_LOCK_RENEW: _lock_renew, BATCH_LOCK_RELEASE: _lock_release, MARK_NOTIFIED: _mark_notified,
        }  # fmt: skip
        self._stream_added: asyncio.Event | None = None
        self._publishing: asyncio.Event | None = None

    # The client's surface.

    def register_script(self, text: str) -> FakeScript:
        return FakeScript(self, text)

    def pipeline(self, transaction: bool = True) -> FakePipeline:
        return FakePipeline(self)

    def _check(self) -> None:
        if self.down:
            raise RedisConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    async def ping(self) -> bool:
        self._check()
        return True

    async def get(self, key: str) -> bytes | None:
        self._check()
        return self.strings.get(key)

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        self._check()
        return [self.strings.get(key) for key in keys]

    async def set(self, key: str, value: Any, nx: bool = False, **_: Any) -> bool | None:
        self._check()
        if nx and key in self.strings:
            return None
        self.strings[key] = _bytes(value)
        return True

    async def delete(self, *keys: str) -> int:
        self._check()
        return sum(self._delete(key) for key in keys)

    def _delete(self, key: str) -> int:
        found = [store.pop(key, None) for store in (self.strings, self.hashes, self.zsets, self.streams)]
        return int(any(value is not None for value in found))

    async def exists(self, *keys: str) -> int:
        self._check()
        return sum(any(key in store for store in (self.strings, self.hashes, self.zsets, self.streams))
                   for key in keys)  # fmt: skip

    async def incr(self, key: str) -> int:
        self._check()
        value = int(self.strings.get(key, b"0")) + 1
        self.strings[key] = _bytes(value)
        return value

    async def hset(self, key: str, field: Any = None, value: Any = None, mapping: dict[Any, Any] | None = None) -> int:
        self._check()
        fields = {**({field: value} if field is not None else {}), **(mapping or {})}
        stored = self.hashes.setdefault(key, {})
        for name, item in fields.items():
            stored[_bytes(name)] = _bytes(item)
        return len(fields)

    async def hincrby(self, key: str, field: Any, amount: int = 1) -> int:
        self._check()
        fields = self.hashes.setdefault(key, {})
        value = int(fields.get(_bytes(field), b"0")) + amount
        fields[_bytes(field)] = str(value).encode()
        return value

    async def hget(self, key: str, field: Any) -> bytes | None:
        self._check()
        return self.hashes.get(key, {}).get(_bytes(field))

    async def hmget(self, key: str, *fields: Any) -> list[bytes | None]:
        self._check()
        return [self.hashes.get(key, {}).get(_bytes(field)) for field in fields]

    async def hgetall(self, key: str) -> dict[bytes, bytes]:
        self._check()
        return dict(self.hashes.get(key, {}))

    async def hexists(self, key: str, field: Any) -> bool:
        self._check()
        return _bytes(field) in self.hashes.get(key, {})

    async def hdel(self, key: str, *fields: Any) -> int:
        self._check()
        stored = self.hashes.get(key, {})
        return sum(stored.pop(_bytes(name), None) is not None for name in fields)

    async def hscan_iter(self, key: str) -> Any:
        self._check()
        for name, value in list(self.hashes.get(key, {}).items()):
            yield name, value

    async def zadd(self, key: str, mapping: dict[Any, float], **_: Any) -> int:
        self._check()
        stored = self.zsets.setdefault(key, {})
        for member, score in mapping.items():
            stored[_bytes(member)] = float(score)
        return len(mapping)

    async def zrem(self, key: str, *members: Any) -> int:
        self._check()
        stored = self.zsets.get(key, {})
        return sum(stored.pop(_bytes(member), None) is not None for member in members)

    async def zcard(self, key: str) -> int:
        self._check()
        return len(self.zsets.get(key, {}))

    async def zcount(self, key: str, low: float, high: float | str) -> int:
        self._check()
        top = str(high)
        below = (lambda score: score < float(top[1:])) if top.startswith("(") else (lambda score: score <= float(top))
        return sum(1 for score in self.zsets.get(key, {}).values() if score >= float(low) and below(score))

    async def zrank(self, key: str, member: Any) -> int | None:
        self._check()
        ordered = self._ordered(key)
        return next((n for n, (name, _) in enumerate(ordered) if name == _bytes(member)), None)

    async def zrange(self, key: str, start: int, end: int, withscores: bool = False) -> list[Any]:
        self._check()
        ordered = self._ordered(key)[start : None if end == -1 else end + 1]
        return ordered if withscores else [name for name, _ in ordered]

    def _ordered(self, key: str) -> list[tuple[bytes, float]]:
        return sorted(self.zsets.get(key, {}).items(), key=lambda item: (item[1], item[0]))

    async def expire(self, key: str, seconds: int) -> bool:
        self._check()
        return True

    async def pexpireat(self, key: str, when: int) -> bool:
        self._check()
        return True

    async def publish(self, channel: str, message: Any) -> int:
        self._check()
        return self.publish_now(channel, _bytes(message))

    def publish_now(self, channel: str, message: bytes) -> int:
        """PUBLISH: to every pub/sub connection subscribed to `channel`."""
        self.published.append((channel, message))
        if self._publishing is not None:
            self._publishing.set()
        heard = [c for c in self.connections if channel in c.channels]
        for connection in heard:
            connection.push([b"message", channel.encode(), message])
        return len(heard)

    async def heard(self, channel: str) -> bytes:
        """The first message published on `channel` (awaited until there is one)."""
        while True:
            found = next((message for name, message in self.published if name == channel), None)
            if found is not None:
                return found
            self._publishing = asyncio.Event()
            await self._publishing.wait()

    def xadd_now(self, key: str, fields: dict[str, Any]) -> bytes:
        """XADD: an entry of `fields` at the end of the stream `key`."""
        entries = self.streams.setdefault(key, [])
        millis = int(time.time() * 1000)
        entry_id = f"{millis}-{len(entries)}".encode()
        entries.append((entry_id, {_bytes(name): _bytes(value) for name, value in fields.items()}))
        if self._stream_added is not None:
            self._stream_added.set()
        return entry_id

    async def xread(self, streams: dict[str, Any], block: int | None = None, count: int | None = None) -> list[Any]:
        self._check()
        deadline = time.monotonic() + (block or 0) / 1000
        while True:
            found = []
            for key, last in streams.items():
                after = _entry_order(_bytes(last))
                items = [(entry_id, fields) for entry_id, fields in self.streams.get(key, [])
                         if _entry_order(entry_id) > after][:count]  # fmt: skip
                if items:
                    found.append([key.encode(), items])
            left = deadline - time.monotonic()
            if found or left <= 0:
                return found
            self._stream_added = asyncio.Event()
            try:
                async with asyncio.timeout(left):
                    await self._stream_added.wait()
            except TimeoutError:
                return []

    async def aclose(self, **_: Any) -> None:
        pass

    # What the worker and its Redis do, as the tests need it.

    def finish(self, config: Config, key: str, status: str = "SUCCESS", result: Any = None) -> dict[str, Any]:
        """The job of `key` ends as a worker ends it (the contract's STORE_ONCE): its
        result meta stored once, its claim kept in it (the claim's fingerprint first) and
        its hash gone, published on the job's channel and its claim's reply_to; the job
        leaves its tenant's jobs in flight, and its lease goes."""
        keys, job = config.keys, config.keys.job(key)
        claim = self.hashes.get(job, {})
        if claim.get(b"tenant"):
            self.zsets.get(keys.in_flight(claim[b"tenant"].decode()), {}).pop(key.encode(), None)
        self.strings.pop(keys.lease(key), None)
        stored = self.strings.get(keys.result(key))
        if stored is not None:  # a result is stored once: the first stays
            return json.loads(stored)
        meta = {"status": status, "result": result, "task_id": key,
                "date_done": datetime.now(UTC).isoformat()}  # fmt: skip
        kept = {name: claim[name.encode()].decode() for name in ("fingerprint", "accepted_at", "started_at", "tenant")
                if name.encode() in claim}  # fmt: skip
        raw = json.dumps(meta).encode()  # as the worker's result is serialized
        if kept:  # put first into the result's text, as the script writes it (CLAIM matches it there)
            raw = (
                b'{"' + KEPT_CLAIM.encode() + b'":' + json.dumps(kept, separators=(",", ":")).encode() + b"," + raw[1:]
            )
            meta = json.loads(raw)
        self.strings[keys.result(key)] = raw
        self.publish_now(keys.result(key), raw)
        if claim.get(b"reply_to"):
            self.publish_now(claim[b"reply_to"].decode(), raw)
        if kept:
            del self.hashes[job]
        else:
            for name in (b"task", b"reply_to", b"queue", b"background"):
                claim.pop(name, None)
        return meta

    def start(self, config: Config, key: str) -> None:
        """A worker starts the job of `key` (the contract's MARK_STARTED)."""
        self.hashes.setdefault(config.keys.job(key), {})[b"started_at"] = _bytes(time.time())
        self.zsets.get(config.keys.queued, {}).pop(key.encode(), None)

    # The result waiter's connection (redis.asyncio.connection.Connection).

    def connection(self, **_: Any) -> FakePubSubConnection:
        """A pub/sub connection to this Redis (what the result waiter makes)."""
        connection = FakePubSubConnection(self)
        self.connections.append(connection)
        return connection

    def drop_connections(self) -> None:
        """Redis closes every pub/sub connection (a restart)."""
        for connection in list(self.connections):
            connection.lost()


def _entry_order(entry_id: bytes) -> tuple[int, int]:
    millis, _, seq = entry_id.partition(b"-")
    return int(millis), int(seq or 0)


class FakeScript:
    """A registered script: run by the fake's Python version of it."""

    def __init__(self, redis: FakeRedis, text: str) -> None:
        self._redis = redis
        self._text = text

    async def __call__(self, keys: list[str] | None = None, args: list[Any] | None = None, client: Any = None) -> Any:
        if isinstance(client, FakePipeline):
            client.calls.append(lambda: self._run(keys or [], args or []))
            return client
        self._redis._check()
        return self._run(keys or [], args or [])

    def _run(self, keys: list[str], args: list[Any]) -> Any:
        redis = self._redis
        if self._text not in redis.scripts:
            raise NotImplementedError(f"the fake Redis does not run this script:\n{self._text[:200]}")
        redis.ran.append((self._text, keys, args))
        return redis.scripts[self._text](redis, keys, args)


class FakePipeline:
    """A pipeline: commands queued, run in order by `execute`, every answer in a list."""

    def __init__(self, redis: FakeRedis) -> None:
        self._redis = redis
        self.calls: list[Callable[[], Any]] = []

    def __getattr__(self, name: str) -> Callable[..., FakePipeline]:
        command = getattr(self._redis, name)

        def queue(*args: Any, **kwargs: Any) -> FakePipeline:
            self.calls.append(lambda: command(*args, **kwargs))
            return self

        return queue

    async def execute(self) -> list[Any]:
        self._redis._check()
        answers = []
        for call in self.calls:
            answer = call()
            answers.append(await answer if asyncio.iscoroutine(answer) else answer)
        self.calls = []
        return answers

    async def __aenter__(self) -> FakePipeline:
        return self

    async def __aexit__(self, *_: Any) -> None:
        self.calls = []


class FakePubSubConnection:
    """The result waiter's pub/sub connection: SUBSCRIBE, UNSUBSCRIBE and PING answered
    as Redis answers them (RESP2), messages pushed as they are published."""

    def __init__(self, redis: FakeRedis) -> None:
        self._redis = redis
        self.channels: set[str] = set()
        self.sent: list[tuple[str, ...]] = []
        self._replies: asyncio.Queue[Any] = asyncio.Queue()
        self.connected = False

    async def connect(self) -> None:
        self._redis._check()
        self.connected = True

    async def disconnect(self) -> None:
        if self.connected:
            self.lost()

    def lost(self) -> None:
        self.connected = False
        self.channels.clear()
        if self in self._redis.connections:
            self._redis.connections.remove(self)
        self._replies.put_nowait(RedisConnectionError("Connection closed by server."))

    def push(self, reply: Any) -> None:
        self._replies.put_nowait(reply)

    async def send_command(self, *command: str, check_health: bool = True) -> None:
        if not self.connected:
            raise RedisConnectionError("not connected")
        self.sent.append(command)
        name, channels = command[0].upper(), command[1:]
        for channel in channels:
            if name == "SUBSCRIBE":
                self.channels.add(channel)
            elif name == "UNSUBSCRIBE":
                self.channels.discard(channel)
            self.push([name.lower().encode(), channel.encode(), len(self.channels)])
        if name == "PING":
            self.push([b"pong", b""])

    async def read_response(self) -> Any:
        reply = await self._replies.get()
        if isinstance(reply, Exception):
            raise reply
        return reply


# The contract's scripts, as the tests need them.


def _claim(redis: FakeRedis, keys: list[str], args: list[Any]) -> Any:
    job, queued, *ended = keys  # the result's key: an ended job's claim is kept in it
    existing = redis.hashes.get(job, {}).get(b"fingerprint")
    if existing is not None:
        return existing
    kept = re.match(rb'^{"claim":{"fingerprint":"([^"]*)"', redis.strings.get(ended[0], b"")[:256]) if ended else None
    if kept:
        return kept.group(1)
    waiting = len(redis.zsets.get(queued, {}))
    if waiting >= int(args[5]):
        return [b"full", waiting]
    fields = {b"fingerprint": args[0], b"task": args[1], b"accepted_at": args[2]}
    for name, value in ((b"reply_to", args[6]), (b"tenant", args[7]), (b"queue", args[8])):
        if value:
            fields[name] = value
    if args[9] == "1":
        fields[b"background"] = "1"
    if len(args) > 10 and args[10] != "":
        fields[b"priority"] = args[10]
    redis.hashes[job] = {name: _bytes(value) for name, value in fields.items()}
    redis.zsets.setdefault(queued, {})[_bytes(args[4])] = float(args[2])
    return None


def _mark_notified(redis: FakeRedis, keys: list[str], args: list[Any]) -> Any:
    (job,) = keys
    if job not in redis.hashes:  # ended already: nothing is made again
        return 0
    redis.hashes[job][b"notify"] = b"1"
    return 1


def _cancel(redis: FakeRedis, keys: list[str], args: list[Any]) -> Any:
    job, queued, result, cancel, in_flight = keys
    if result in redis.strings:
        return b"finished"
    if job not in redis.hashes:
        return b"unknown"
    redis.hashes[job][b"cancelled_at"] = _bytes(args[0])
    redis.zsets.get(queued, {}).pop(_bytes(args[2]), None)
    redis.zsets.get(in_flight, {}).pop(_bytes(args[2]), None)
    redis.strings[result] = _bytes(args[3])
    redis.publish_now(result, _bytes(args[3]))
    reply_to = redis.hashes[job].get(b"reply_to")
    if reply_to:
        redis.publish_now(reply_to.decode(), _bytes(args[3]))
    redis.publish_now(cancel, _bytes(args[2]))
    return b"cancelled"


def _stream_join(redis: FakeRedis, keys: list[str], args: list[Any]) -> Any:
    streams, readers = keys
    limit = int(args[3])
    if limit > 0:
        reading = redis.zsets.setdefault(streams, {})
        if len(reading) >= limit:
            return len(reading)
        reading[_bytes(args[0])] = float(args[2])
    redis.strings[readers] = _bytes(int(redis.strings.get(readers, b"0")) + 1)
    return -1


def _stream_leave(redis: FakeRedis, keys: list[str], args: list[Any]) -> Any:
    streams, readers = keys
    redis.zsets.get(streams, {}).pop(_bytes(args[0]), None)
    left = int(redis.strings.get(readers, b"0")) - 1
    if left <= 0:
        redis.strings.pop(readers, None)
    else:
        redis.strings[readers] = _bytes(left)
    return left


def _lock_renew(redis: FakeRedis, keys: list[str], args: list[Any]) -> Any:
    owner = redis.strings.get(keys[0])
    if owner is not None and owner != _bytes(args[0]):
        return 0
    redis.strings[keys[0]] = _bytes(args[0])
    return 1


def _lock_release(redis: FakeRedis, keys: list[str], args: list[Any]) -> Any:
    if redis.strings.get(keys[0]) == _bytes(args[0]):
        del redis.strings[keys[0]]
        return 1
    return 0


def _rate_count(redis: FakeRedis, keys: list[str], args: list[Any]) -> Any:
    value = int(redis.strings.get(keys[0], b"0")) + 1
    redis.strings[keys[0]] = _bytes(value)
    return value


@dataclass
class Sent:
    """A task message as the API published it."""

    name: str
    task_id: str
    job: dict[str, Any]
    queue: str | None
    priority: int | None
    headers: dict[str, str] | None


class FakeBroker:
    """The broker behind a `JobQueue`'s Celery app: each ``send_task`` recorded, or
    refused as an unreachable broker refuses it (`down`); its queues' `depths` counted
    through a connection's channel, as Kombu asks. `on_send` runs on the event loop for
    each message (a worker taking it)."""

    def __init__(self) -> None:
        self.sent: list[Sent] = []
        self.depths: dict[str, int] = {}
        self.consumers: dict[str, list[dict[str, str]]] = {}  # each worker's queues, as it answers
        self.down = False
        self.on_send: Callable[[Sent], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def attach(self, celery: Any) -> None:
        """Put this broker behind `celery` (the queue's app); called on the event loop."""
        self._loop = asyncio.get_running_loop()
        celery.send_task = self._send_task
        celery.connection_for_read = celery.connection_for_write = lambda: _KombuConnection(self)
        celery.control.inspect = lambda timeout=None: SimpleNamespace(active_queues=lambda: self.consumers)

    def _send_task(self, name: str, args: tuple[Any, ...] = (), task_id: str = "", queue: str | None = None,
                   priority: int | None = None, headers: dict[str, str] | None = None, **_: Any) -> None:  # fmt: skip
        if self.down:
            raise OperationalError("[Errno 111] Connection refused")
        sent = Sent(name, task_id, args[0], queue, priority, headers)
        with self._lock:
            self.sent.append(sent)
        if self.on_send is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self.on_send, sent)


class _KombuConnection:
    """A broker connection as `JobQueue` uses one: to count a queue's messages."""

    def __init__(self, broker: FakeBroker) -> None:
        self._broker = broker

    def __enter__(self) -> _KombuConnection:
        return self

    def __exit__(self, *_: Any) -> None:
        pass

    def ensure_connection(self, **_: Any) -> None:
        if self._broker.down:
            raise OperationalError("[Errno 111] Connection refused")

    def channel(self) -> _KombuConnection:
        return self

    def queue_declare(self, queue: str, passive: bool = False) -> Any:
        return SimpleNamespace(message_count=self._broker.depths.get(queue, 0))

    def close(self) -> None:
        pass


@dataclass
class Parts:
    """The API's job parts, real, on a fake Redis and a fake broker."""

    config: Config
    redis: FakeRedis
    broker: FakeBroker
    metrics: Metrics
    store: JobStore
    quotas: Quotas
    admission: Admission
    waiter: result_waiter.ResultWaiter
    queue: JobQueue
    fair: FairShare
    routing: JobRouting
    published: Published
    requeues: Requeues
    runner: JobRunner

    def answer(self, sent: Sent, result: Any, status: str = "SUCCESS") -> None:
        """A worker answers the job of message `sent`."""
        self.redis.start(self.config, sent.task_id)
        self.redis.finish(self.config, sent.task_id, status, result)

    def answer_every_job(self, result: Callable[[Sent], Any]) -> None:
        """Every job published from now on is answered at once with `result(message)`."""
        self.broker.on_send = lambda sent: self.answer(sent, result(sent))


def config(**settings: Any) -> Config:
    """A config read from nothing but `settings`."""
    return Config(_env_file=None, **settings)  # type: ignore[call-arg]


@asynccontextmanager
async def running_parts(settings: Config | None = None, notify_jobs: bool = False) -> AsyncIterator[Parts]:
    """The API's job parts on fakes of Redis and the broker, started (the result waiter
    subscribed to its reply channel) and stopped with the block."""
    settings = settings or config(wait_timeout=5)
    redis, broker = FakeRedis(), FakeBroker()
    with mock.patch.object(result_waiter, "Connection", redis.connection):
        registry = load_registry(settings)
        metrics = Metrics()
        store = JobStore(settings, redis)  # type: ignore[arg-type]
        quotas = Quotas(settings, redis, metrics, shared=False)  # type: ignore[arg-type]
        admission = Admission(settings, store, quotas)
        waiter = result_waiter.ResultWaiter(settings, redis)  # type: ignore[arg-type]
        fair = FairShare(settings, load_tenants_of(settings), registry.queues, redis)  # type: ignore[arg-type]
        queue = JobQueue(settings, fair.tenant_queues)
        broker.attach(queue.celery)
        published, requeues = Published(), Requeues(metrics)
        runner = JobRunner(settings, admission, store, queue, waiter, fair, metrics, published, requeues,
                           redis, notify_jobs)  # type: ignore[arg-type]  # fmt: skip
        await waiter.start()
        try:
            yield Parts(settings, redis, broker, metrics, store, quotas, admission, waiter, queue, fair,
                        JobRouting(settings, registry), published, requeues, runner)  # fmt: skip
        finally:
            await waiter.close()
            queue.close()


def http_edge(settings: Config | None = None) -> Edge:
    """What every route class needs: the settings, a guard counting in a fake Redis, the metrics."""
    settings = settings or config()
    metrics = Metrics()
    return Edge(settings, Guard(settings, FakeRedis(), metrics), metrics)  # type: ignore[arg-type]
