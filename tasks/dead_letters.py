"""Dead letters: jobs that failed, and messages no worker could process, kept to list and replay.

A job that fails (the model server stayed down past its retries and deadline, a
worker error) is answered with its error, and a copy of its task message goes to
the queue ``{QUEUE_NAME}.dead``, with why and when in its headers (but a batch's
line: its failure is kept in its batch's error file). So do messages a
worker cannot process (not JSON, no such task, malformed): they are acknowledged
instead of looping, and kept. Jobs the model server refused as malformed (its 4xx
answers) are the caller's to fix, and are not kept.

    python -m tasks.dead_letters list [--limit N]
    python -m tasks.dead_letters replay JOB_ID ... | --all
    python -m tasks.dead_letters purge

Replaying a job forgets its failure (result and lease), puts it back in the queue
under the same job_id, and removes its dead letter; ``GET /jobs/{id}`` then shows
it queued, and its new result when it has run. Listing, replaying and purging live in
shared/broker/dead_letters.py, for the API's ``/dead_letters`` too.

A job answered (or cancelled) is never dead-lettered nor replayed: a worker cut off
from the network fails a job that another worker answered meanwhile, and that late
failure is dropped (the worker logs it); replay skips a dead job whose stored result
is an answer or a cancellation, names it and why, and removes its dead letter.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from celery import Celery
from celery.signals import task_failure
from celery.worker.consumer import Consumer as CeleryConsumer
from kombu import Connection, Message

# Listing, replaying and purging are the operator's, shared with the API.
from shared.broker.dead_letters import DEAD_AT, REASON, dead_letter_queue, list_dead, purge, replay, settled_as
from shared.broker.dead_letters import Replayed as Replayed
from shared.broker.dead_letters import describe as describe
from shared.config import Config
from shared.contract import INTERNAL_TASKS, is_kept
from shared.telemetry import tracing
from tasks.worker import WorkerTask

log = logging.getLogger(__name__)


@contextmanager
def _confirmed(config: Config) -> Iterator[Connection | None]:
    """With quorum queues, a connection of its own publishing with confirms: a dead letter
    is on a majority of the cluster's nodes before the job's message is acknowledged.
    (Not the worker's shared one: confirms there let one thread read another's.)
    Otherwise None: the worker's own connections."""
    if not config.quorum_queues:
        yield None
        return
    with Connection(config.broker_url, transport_options={"confirm_publish": True}) as connection:
        dead_letter_queue(config)(connection.default_channel).declare()
        yield connection


def _publish(app: Celery, body: Any, headers: dict[str, Any], content_type: str, encoding: str, reason: str) -> None:
    config = WorkerTask.bound_worker().config
    queue = dead_letter_queue(config)
    headers = {**headers, REASON: reason[:2000], DEAD_AT: time.time()}
    with _confirmed(config) as connection, app.producer_or_acquire(connection and connection.Producer()) as producer:
        producer.publish(
            body,
            exchange=queue.exchange,
            routing_key=queue.routing_key,
            declare=[queue],
            headers=headers,
            content_type=content_type,
            content_encoding=encoding,
            delivery_mode="persistent",
            retry=True,
            retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5},
        )


def keep_message(app: Celery, message: Message, reason: str) -> None:
    """Keep a message no worker could process, as it came."""
    try:
        _publish(
            app,
            message.body,
            dict(message.headers or {}),
            message.content_type or "application/data",
            message.content_encoding or "binary",
            reason,
        )
        log.error("message kept in the dead-letter queue: %s", reason)
    except Exception:
        log.exception("could not keep a message in the dead-letter queue (%s): it is lost", reason)


class Consumer(CeleryConsumer):
    """Celery's consumer, keeping what it cannot process instead of dropping it."""

    class Blueprint(CeleryConsumer.Blueprint):
        # Delayed delivery set up through one node of a cluster, not each (tasks/broker/delayed_delivery.py).
        default_steps = [
            "tasks.broker.delayed_delivery:ClusterDelayedDelivery" if step.endswith(":DelayedDelivery") else step
            for step in CeleryConsumer.Blueprint.default_steps
        ]

    def on_decode_error(self, message: Message, exc: Exception) -> None:
        keep_message(self.app, message, f"could not decode the message: {exc}")
        super().on_decode_error(message, exc)

    def on_unknown_message(self, body: Any, message: Message) -> None:
        keep_message(self.app, message, "not a task message")
        super().on_unknown_message(body, message)

    def on_unknown_task(self, body: Any, message: Message, exc: Exception) -> None:
        keep_message(self.app, message, f"no such task: {exc}")
        super().on_unknown_task(body, message, exc)

    def on_invalid_task(self, body: Any, message: Message, exc: Exception) -> None:
        keep_message(self.app, message, f"invalid task message: {exc}")
        super().on_invalid_task(body, message, exc)


@task_failure.connect
def _keep_failed_job(
    sender: WorkerTask | None = None,
    task_id: str | None = None,
    exception: BaseException | None = None,
    args: Any = None,
    kwargs: Any = None,
    **_: Any,
) -> None:
    name = type(exception).__name__
    # The caller's own errors (answered 4xx) cannot succeed when replayed; the gateway's
    # own jobs (GET /v1/models) are asked again when needed.
    if sender is None or task_id is None or not is_kept(name) or sender.name in INTERNAL_TASKS:
        return
    job = args[0] if isinstance(args, (list, tuple)) and args else None
    if isinstance(job, dict) and job.get("batch"):
        return  # a batch's line: its failure is in its batch's error file
    reason = f"{name}: {exception}"
    worker = sender.worker
    config = worker.config
    settled = _settled_after_failure(worker.running.redis, config, task_id)
    if settled is not None:
        # Another run answered it (this worker was cut off, or too slow): the caller
        # has that answer, and this failure was not stored over it.
        log.warning("job %s failed here (%s), but another run %s it: failure dropped, not dead-lettered",
                    task_id, reason, settled)  # fmt: skip
        return
    try:
        with _confirmed(config) as connection:
            _send_dead(sender, task_id, args, kwargs, config, connection, reason)
        log.info("job %s failed (%s): kept in the dead-letter queue", task_id, reason)
    except Exception:
        log.exception("job %s failed and could not be kept in the dead-letter queue", task_id)


def _send_dead(
    sender: Any, task_id: str, args: Any, kwargs: Any, config: Config, connection: Connection | None, reason: str
) -> None:
    sender.app.send_task(
        sender.name,
        args=args,
        kwargs=kwargs,
        task_id=task_id,
        queue=dead_letter_queue(config),
        # Its trace's context kept: replayed, it runs in the trace it failed in.
        headers={**tracing.headers_of(sender.request), REASON: reason[:2000], DEAD_AT: time.time()},
        retry=True,
        connection=connection,
    )


def _settled_after_failure(store: redis.Redis, config: Config, job_id: str) -> str | None:
    """`settled_as`, read again on a new connection when Redis does not answer (a
    worker back from a network cut holds connections that died meanwhile); None when
    it cannot be read: the job is kept, and replay reads its result again."""
    for delay in (0.2, 1.0, 3.0, None):
        try:
            return settled_as(store, config, job_id)
        except (redis.RedisError, OSError) as exc:
            if delay is None:
                log.warning("job %s failed; its stored result could not be read (%s): kept", job_id, exc)
                return None
            time.sleep(delay)
    return None


# The command line.


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks.dead_letters", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="show the dead letters, oldest first (one JSON object per line)")
    listing.add_argument("--limit", type=int, default=100)
    replaying = commands.add_parser("replay", help="put dead jobs back in the queue")
    replaying.add_argument("job_ids", nargs="*")
    replaying.add_argument("--all", action="store_true", help="every dead job")
    commands.add_parser("purge", help="delete every dead letter")
    args = parser.parse_args(argv)
    config = Config.read_from_env()
    if args.command == "list":
        for entry in list_dead(config, args.limit):
            print(json.dumps(entry))
    elif args.command == "replay":
        if not args.job_ids and not args.all:
            parser.error("name the jobs to replay, or --all")
        done = replay(config, None if args.all else set(args.job_ids))
        print(f"replayed {len(done.replayed)} job(s): {' '.join(done.replayed)}")
        for job_id, why in done.skipped.items():
            print(f"skipped {job_id}: {why}")
        missing = set(args.job_ids) - set(done.replayed) - set(done.skipped)
        if missing:
            print(f"not in the dead-letter queue: {' '.join(sorted(missing))}", file=sys.stderr)
            return 1
    else:
        print(f"purged {purge(config)} dead letter(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
