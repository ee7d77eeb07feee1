"""Publishing jobs to the broker by task name, off the event loop."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from celery import Celery
from kombu.exceptions import KombuError, OperationalError

from api.errors import BrokerUnavailable
from shared.broker.queues import band_queue, bands, declared
from shared.broker.settings import celery_settings, priority_for
from shared.config import Config
from shared.webhooks import Endpoint, emit

log = logging.getLogger(__name__)

ARGS_REPR_CHARS = 1024  # as much of a job as Flower shows as its arguments (Celery's own limit)


def args_repr(job: dict[str, Any]) -> str:
    """The job as Flower shows its arguments: JSON, cut to ARGS_REPR_CHARS. Celery's
    own (a pure-Python repr) cost a share of the API's CPU per job (docs/benchmark.md)."""
    text = json.dumps(job, ensure_ascii=False)
    if len(text) > ARGS_REPR_CHARS:
        text = text[: ARGS_REPR_CHARS - 3] + "..."
    return f"({text},)"


class JobQueue:
    """Sends tasks by name (``llm.generate``, ``llm.chat``) without importing worker code.

    Publishing is blocking I/O (and waits for the broker's confirm), so it runs on
    a small dedicated thread pool.
    """

    def __init__(self, config: Config, tenant_queues: list[str] | None = None) -> None:
        self._config = config
        self._celery = Celery("llm-api", set_as_current=False)
        self._celery.conf.update(celery_settings(config))
        # Tenants' queues of busy models (api/tenancy/fair_share.py): declared as the models' are,
        # with their priority bands on quorum queues.
        extra = [declared(band, config) for name in tenant_queues or [] for band in bands(config, name)]
        self._celery.conf.task_queues = (*self._celery.conf.task_queues, *extra)
        # The API reads results itself (see result_waiter); without a backend,
        # send_task does not start Celery's own result consumer.
        self._celery.conf.result_backend = None
        if config.uses_rabbitmq:
            # Publisher confirms: a job is accepted only once RabbitMQ has it. Only here:
            # in a threaded worker, confirms on the shared event connection let one
            # thread read another's confirm, and both wait forever.
            self._celery.conf.broker_transport_options = {"confirm_publish": True}
        self._executor = ThreadPoolExecutor(config.publish_threads, thread_name_prefix="publish")
        self._where = config.broker_name
        # Publishing a job: once through each node of a cluster, and twice at least: with one
        # node, a job sent just after RabbitMQ came back was refused (1 of 30) when Kombu's
        # own retries of a pooled connection gave up; a second try starts afresh.
        self._tries = max(2, len(config.rabbit_mq_nodes))
        self._bands = config.quorum_queues

    @property
    def celery(self) -> Celery:
        """The API's Celery app (its broker connections), for the fair-share dispatchers."""
        return self._celery

    def add_queues(self, names: list[str]) -> None:
        """Publish to the queues `names` too (a tenant's queues of each model, as tenants
        join: api/tenancy/fair_share.py), declared as those of the start are, with their
        priority bands on quorum queues. Celery's send_task looks a queue up in the app's
        queues and, not finding it, makes one of its own kind: a classic queue without
        priorities, which RabbitMQ refuses to declare where the dispatcher declared it
        with priorities (or the reverse). Each band is declared by the first publish to it
        on each connection (Kombu's maybe_declare). Called on the event loop; the
        publishing threads only look queues up."""
        queues = self._celery.amqp.queues
        for name in names:
            for band in bands(self._config, name):
                if band not in queues:
                    queues.add(declared(band, self._config))

    async def submit(
        self,
        task_name: str,
        job_id: str,
        job: dict[str, Any],
        queue: str | None = None,
        priority: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Queue `job` for the task `task_name` under the id `job_id` (in `queue`, or the
        default one), with `priority` (0 batch .. 9 most urgent) and the message `headers`
        (its trace's context: shared/telemetry/tracing.py)."""
        if self._bands:  # the job's priority band of its queue
            queue = band_queue(self._config, queue or self._celery.conf.task_default_queue, priority)
        send = partial(
            self._celery.send_task,
            str(task_name),  # a contract.TaskName: its plain name on the wire
            args=(job,),
            argsrepr=args_repr(job),
            kwargsrepr="{}",
            task_id=job_id,
            queue=queue,
            priority=None if priority is None else priority_for(self._config, priority),
            headers=headers or None,
        )
        # A cluster's node lost while it held the publish (its confirm unsent): again,
        # through the next node (each of the pool's connections to the dead node fails
        # once). Should an earlier try have landed after all, the job is run and
        # answered once all the same (tasks/running.py).
        for left in range(self._tries - 1, -1, -1):
            try:
                await asyncio.get_running_loop().run_in_executor(self._executor, send)
                return
            except (OperationalError, KombuError, OSError) as exc:
                log.warning("could not publish job %s: %r%s", job_id, exc, "; trying again" if left else "")
                if not left:
                    raise BrokerUnavailable(f"broker ({self._where}) unavailable: job not queued") from None

    async def send_event(self, endpoints: list[Endpoint], kind: str, object_id: str) -> None:
        """Queue the deliveries of one webhook event (shared/webhooks.py)."""
        send = partial(emit, self._celery, self._config, endpoints, kind, object_id)
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, send)
        except (OperationalError, KombuError, OSError) as exc:
            log.warning("could not queue the webhook event %s of %s: %s", kind, object_id, exc)
            raise BrokerUnavailable(f"broker ({self._where}) unavailable: webhook event not queued") from None

    def depths(self, queues: list[str], whole: Sequence[str] = ()) -> dict[str, int]:
        """Messages waiting in each queue, all its priority bands' (-1 for a queue the
        broker could not count), and in each queue of `whole`, one without bands (the
        dead letters'), over one connection."""
        counted = self._count([band for queue in queues for band in bands(self._config, queue)] + list(whole))
        found = {queue: _total([counted[band] for band in bands(self._config, queue)]) for queue in queues}
        return found | {queue: counted[queue] for queue in whole}

    def _count(self, queues: list[str]) -> dict[str, int]:
        counts = {}
        try:
            with self._celery.connection_for_read() as connection:
                connection.ensure_connection(max_retries=1)
                channel = connection.channel()
                try:
                    for queue in queues:
                        try:
                            counts[queue] = channel.queue_declare(queue, passive=True).message_count
                        except Exception:  # noqa: BLE001 - not declared yet (no worker ever ran), or gone
                            counts[queue] = 0
                            channel = connection.channel()  # a failed passive declare closes the channel
                finally:
                    channel.close()
        except Exception as exc:  # noqa: BLE001 - the broker is down: the metric says unknown
            log.warning("could not count queued jobs: %s", exc)
            return dict.fromkeys(queues, -1)
        return counts

    def check(self) -> None:
        """Raise unless a connection to the broker can be made now."""
        with self._celery.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=self._config.broker_connect_timeout)

    def consumers(self, timeout: float) -> dict[str, int]:
        """Workers consuming each queue, as the workers answer (none in `timeout`: empty)."""
        try:
            replies = self._celery.control.inspect(timeout=timeout).active_queues() or {}
        except Exception as exc:  # noqa: BLE001 - the broker is down: no worker can be reached
            log.warning("could not ask the workers for their queues: %s", exc)
            return {}
        counts: dict[str, int] = {}
        for queues in replies.values():
            for queue in queues or []:
                counts[queue["name"]] = counts.get(queue["name"], 0) + 1
        return counts

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


def _total(counts: list[int]) -> int:
    return -1 if -1 in counts else sum(counts)
