"""The jobs running in a worker process: starting them once, leases, cancellation.

One `RunningJobs` per worker process. As a job starts it asks Redis whether it may
run (`start`): not if it was cancelled while queued, nor if it has a result already
(its message was handed out again after the worker that ran it died), nor while
another live worker runs it (the message was handed out again while that worker
still runs it: RabbitMQ's consumer timeout, a broker restart). A worker holds a
*lease* (a Redis key with a TTL, `JOB_LEASE` seconds) on each job it runs, and a
thread renews the leases every third of that; on a Redis broker the same thread
renews the worker's unacknowledged messages, so they are handed out again only
once their worker stops renewing them (it died).

``DELETE /jobs/{id}`` marks the job cancelled, stores its cancelled result, and
publishes its id on ``{REDIS_PREFIX}:cancel``; a listener thread stops the running
job it names, by closing its connection to the model server.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator

import redis

from shared.config import Config
from shared.contract import MARK_STARTED, JobField, Start
from shared.storage import redis_clients
from tasks.model import Cancel

log = logging.getLogger(__name__)


class RunningJobs:
    """Knows the jobs running in this process: leases them, and stops those cancelled."""

    def __init__(self, config: Config, unacked_tags: Callable[[], list[str]] | None = None) -> None:
        self.config = config
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self._running: dict[str, Cancel] = {}
        self._leased: set[str] = set()
        self._lock = threading.Lock()
        self._unacked_tags = unacked_tags
        options = {"socket_connect_timeout": config.redis_connect_timeout}
        self.redis = redis_clients.sync_client(config, socket_timeout=config.redis_connect_timeout, **options)
        self._mark = self.redis.register_script(MARK_STARTED)
        # The listening connection waits as long as it takes; redis-py pings it when idle.
        self._listening = redis_clients.sync_client(config, health_check_interval=10, **options)
        self._stopped = threading.Event()
        self._threads = [
            threading.Thread(target=self._listen_forever, name="cancel-listener", daemon=True),
            threading.Thread(target=self._renew_forever, name="lease-keeper", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        self._stopped.set()

    @property
    def count(self) -> int:
        """Jobs running (or waiting to start) in this process."""
        with self._lock:
            return len(self._running)

    def release(self) -> None:
        """Give up the leases of the jobs still running: the worker is stopping without
        finishing them, and another worker may start them at once."""
        with self._lock:
            jobs, self._leased = list(self._leased), set()
        if jobs:
            with contextlib.suppress(redis.RedisError, OSError):  # else they expire
                self.redis.delete(*(self.config.keys.lease(job_id) for job_id in jobs))

    @contextlib.contextmanager
    def running(self, job_id: str) -> Iterator[Cancel]:
        """While the block runs, a cancellation of the job sets the yielded Cancel, and
        once `start` leased the job to this worker, its lease is renewed.

        The lease is left after the block: the result is stored after the task returns,
        and until then a second delivery of the job must wait for it; the script that
        stores the result deletes it (STORE_ONCE)."""
        cancel = Cancel()
        with self._lock:
            self._running[job_id] = cancel
        try:
            yield cancel
        finally:
            with self._lock:
                self._running.pop(job_id, None)
                self._leased.discard(job_id)

    def start(self, job_id: str, reply_to: str = "") -> Start:
        """Lease and mark the job started: `Start.START`; or why it must not run now:
        CANCELLED, ANSWERED (its result is stored, and published again, on `reply_to`
        too), RUNNING (elsewhere)."""
        config = self.config
        try:
            verdict = self._mark(
                keys=[
                    config.keys.job(job_id),
                    config.keys.queued,
                    config.keys.result(job_id),
                    config.keys.lease(job_id),
                ],
                args=[repr(time.time()), config.job_ttl, job_id, config.job_lease, self.worker, reply_to],
            )
        except (redis.RedisError, OSError) as exc:
            log.warning("could not mark job %s started: %s (it runs all the same)", job_id, exc)
            verdict = Start.START
        verdict = Start(verdict.decode() if isinstance(verdict, bytes) else str(verdict))
        if verdict == Start.START:
            with self._lock:
                self._leased.add(job_id)
        return verdict

    def wait_to_start(self, job_id: str, reply_to: str = "", poll: float = 1.0) -> Start:
        """For a job another worker runs: wait until it has a result or its lease
        lapses (that worker died); then answer as `start` does."""
        log.info("job %s is running elsewhere: waiting for its result, or for its lease to lapse", job_id)
        while True:
            verdict = self.start(job_id, reply_to)
            if verdict != Start.RUNNING:
                return verdict
            self._stopped.wait(poll)

    def _renew_forever(self) -> None:
        every = self.config.job_lease / 3
        while not self._stopped.wait(every):
            try:
                self._renew()
            except (redis.RedisError, OSError) as exc:
                log.warning("could not renew job leases: %s", exc)

    def _renew(self) -> None:
        with self._lock:
            jobs = list(self._leased)
        tags = self._unacked_tags() if self._unacked_tags else []
        if not jobs and not tags:
            return
        pipe = self.redis.pipeline(transaction=False)
        for job_id in jobs:
            pipe.set(self.config.keys.lease(job_id), self.worker, ex=self.config.job_lease)
        if tags:
            # kombu's Redis transport hands a message out again once its score here is
            # older than the visibility timeout; XX: only messages still unacknowledged.
            now = time.time()
            pipe.zadd(self.config.keys.unacked_index, {tag: now for tag in tags}, xx=True)
        pipe.execute()

    def _listen_forever(self) -> None:
        channel = self.config.keys.cancel
        while not self._stopped.is_set():
            try:
                pubsub = self._listening.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(channel)
                # Cancellations announced while this listener was not subscribed are
                # found on the jobs' marks.
                self._cancel_marked()
                while not self._stopped.is_set():
                    message = pubsub.get_message(timeout=5.0)
                    if message and message["type"] == "message":
                        self._cancel(message["data"].decode())
            except (redis.RedisError, OSError) as exc:
                log.warning("cancel listener lost Redis (%s); reconnecting", exc)
                time.sleep(1)

    def _cancel_marked(self) -> None:
        with self._lock:
            jobs = list(self._running)
        if not jobs:
            return
        pipe = self.redis.pipeline(transaction=False)
        for job_id in jobs:
            pipe.hexists(self.config.keys.job(job_id), JobField.CANCELLED_AT)
        for job_id, cancelled in zip(jobs, pipe.execute(), strict=True):
            if cancelled:
                self._cancel(job_id)

    def _cancel(self, job_id: str) -> None:
        with self._lock:
            cancel = self._running.get(job_id)
        if cancel is not None:
            log.info("job %s cancelled: closing its model-server connection", job_id)
            cancel.set()
