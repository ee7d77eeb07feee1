"""Cancelling running jobs: one listener per worker process on ``{REDIS_PREFIX}:cancel``.

``DELETE /jobs/{id}`` marks the job cancelled in Redis, stores its cancelled result,
and publishes its id on the cancel channel. A job checks the mark as it starts (a
queued job never reaches the model server); a running job is stopped by this
listener, which closes its connection to the model server.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator

import redis

from settings import Config
from tasks.model_client import Cancel

log = logging.getLogger(__name__)

# As a job starts: unless it was cancelled while queued (answers 'cancelled') or has
# its result already (answers 'answered': its message was handed out again after the
# worker running it died), it is running (GET /jobs/{id} reads started_at) and no
# longer queued (answers 'start').
MARK_STARTED = """
if redis.call('HEXISTS', KEYS[1], 'cancelled_at') == 1 then return 'cancelled' end
if redis.call('EXISTS', KEYS[3]) == 1 then return 'answered' end
redis.call('HSET', KEYS[1], 'started_at', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[3])
return 'start'
"""


class CancelListener:
    """Knows the jobs running in this process, and stops those the cancel channel names."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._running: dict[str, Cancel] = {}
        self._lock = threading.Lock()
        options = {"socket_connect_timeout": config.redis_connect_timeout}
        self.commands = redis.Redis.from_url(config.redis_url, socket_timeout=config.redis_connect_timeout, **options)
        self._mark = self.commands.register_script(MARK_STARTED)
        # The listening connection waits as long as it takes; redis-py pings it when idle.
        self._listening = redis.Redis.from_url(config.redis_url, health_check_interval=10, **options)
        self._thread = threading.Thread(target=self._listen_forever, name="cancel-listener", daemon=True)
        self._thread.start()

    @contextlib.contextmanager
    def running(self, job_id: str) -> Iterator[Cancel]:
        """While the block runs, a cancellation of `job_id` sets the yielded Cancel."""
        cancel = Cancel()
        with self._lock:
            self._running[job_id] = cancel
        try:
            yield cancel
        finally:
            with self._lock:
                self._running.pop(job_id, None)

    def start(self, job_id: str) -> str:
        """Mark the job started. Answers "start", or why it must not run: "cancelled"
        (before it could start) or "answered" (its result is stored already)."""
        config = self.config
        try:
            verdict = self._mark(
                keys=[config.job_key(job_id), config.queued_key, config.result_key(job_id)],
                args=[repr(time.time()), config.job_ttl, job_id],
            )
        except (redis.RedisError, OSError) as exc:
            log.warning("could not mark job %s started: %s (it runs all the same)", job_id, exc)
            return "start"
        return verdict.decode() if isinstance(verdict, bytes) else str(verdict)

    def _listen_forever(self) -> None:
        channel = self.config.cancel_channel
        while True:
            try:
                pubsub = self._listening.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(channel)
                while True:
                    message = pubsub.get_message(timeout=5.0)
                    if message and message["type"] == "message":
                        self._cancel(message["data"].decode())
            except (redis.RedisError, OSError) as exc:
                log.warning("cancel listener lost Redis (%s); reconnecting", exc)
                time.sleep(1)

    def _cancel(self, job_id: str) -> None:
        with self._lock:
            cancel = self._running.get(job_id)
        if cancel is not None:
            log.info("job %s cancelled: closing its model-server connection", job_id)
            cancel.set()
