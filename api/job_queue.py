"""Publishing jobs to the broker by task name, off the event loop."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from celery import Celery
from kombu.exceptions import KombuError, OperationalError

from api.errors import BrokerUnavailable
from settings import Config, celery_settings

log = logging.getLogger(__name__)


class JobQueue:
    """Sends tasks by name (``llm.generate``, ``llm.chat``) without importing worker code.

    Publishing is blocking I/O (and waits for the broker's confirm), so it runs on
    a small dedicated thread pool.
    """

    def __init__(self, config: Config) -> None:
        self._celery = Celery("llm-api", set_as_current=False)
        self._celery.conf.update(celery_settings(config))
        # The API reads results itself (see result_waiter); without a backend,
        # send_task does not start Celery's own result consumer.
        self._celery.conf.result_backend = None
        if config.uses_rabbitmq:
            # Publisher confirms: a job is accepted only once RabbitMQ has it. Only here:
            # in a threaded worker, confirms on the shared event connection let one
            # thread read another's confirm, and both wait forever.
            self._celery.conf.broker_transport_options = {"confirm_publish": True}
        self._executor = ThreadPoolExecutor(config.publish_threads, thread_name_prefix="publish")
        self._where = "RabbitMQ" if config.uses_rabbitmq else "Redis"

    async def submit(self, task_name: str, job_id: str, job: dict[str, Any]) -> None:
        """Queue `job` for the task `task_name` under the id `job_id`."""
        send = partial(self._celery.send_task, task_name, args=(job,), task_id=job_id)
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, send)
        except (OperationalError, KombuError, OSError) as exc:
            log.warning("could not publish job %s: %s", job_id, exc)
            raise BrokerUnavailable(f"broker ({self._where}) unavailable: job not queued") from None

    def warm_up(self) -> None:
        """Open a broker connection now, so the first request does not pay for it."""
        try:
            with self._celery.producer_or_acquire() as producer:
                producer.connection.ensure_connection(max_retries=1)
        except Exception as exc:  # noqa: BLE001 - a broker that is down now may be up later
            log.warning("broker not reachable at start-up: %s", exc)

    def close(self) -> None:
        """Stop the publishing threads and close broker connections."""
        self._executor.shutdown(wait=True)
        self._celery.close()
