"""Publishing jobs to the broker (api/jobs/queue.py): the API's Celery app's settings,
the queues it declares, and what it does when the broker refuses a publish."""

from __future__ import annotations

from typing import Any

import pytest

from api.jobs.queue import JobQueue
from shared.config import Config

pytestmark = pytest.mark.unit


def config(**settings: Any) -> Config:
    return Config(_env_file=None, **settings)  # type: ignore[call-arg]


def test_api_publishes_with_confirms_on_rabbitmq() -> None:
    queue = JobQueue(Config(_env_file=None, rabbit_mq_host="mq"))  # type: ignore[call-arg]
    try:
        assert queue._celery.conf.broker_transport_options == {"confirm_publish": True}
        # No result backend: send_task must not start Celery's own result consumer.
        assert queue._celery.conf.result_backend is None
    finally:
        queue.close()


def test_api_on_a_redis_broker_keeps_the_workers_visibility_timeout() -> None:
    config = Config(_env_file=None)  # type: ignore[call-arg]
    queue = JobQueue(config)
    try:
        options = queue._celery.conf.broker_transport_options
        assert "confirm_publish" not in options and options["visibility_timeout"] == config.job_lease
    finally:
        queue.close()


def test_a_busy_models_tenant_queues_come_in_bands_too() -> None:
    # A tenant's urgent job, published while the model is contended, waits in its
    # tenant's high band, a queue the API declares (and the dispatcher reads first).
    tenant = "llm-api-queue.tenant.light"
    declared = JobQueue(config(rabbit_mq_host="r1,r2", rabbit_mq_queue_type="quorum"), [tenant])
    try:
        names = {queue.name: queue for queue in declared.celery.conf.task_queues}
        assert {tenant + ".high", tenant, tenant + ".low"} <= set(names)
        assert names[tenant + ".high"].queue_arguments == {"x-queue-type": "quorum"}
    finally:
        declared.close()
    classic = JobQueue(config(rabbit_mq_host="r"), [tenant])
    try:
        assert [queue.name for queue in classic.celery.conf.task_queues if queue.name.startswith(tenant)] == [tenant]
    finally:
        classic.close()


def test_a_tenants_queue_added_later_is_declared_as_the_starts_are() -> None:
    # A project made at runtime: its queue joins the app's, with priorities, where
    # Celery's own for a queue it does not know would have none (and RabbitMQ would
    # refuse it beside the dispatcher's declaration).
    queue = JobQueue(config(rabbit_mq_host="r"))
    try:
        queue.add_queues(["llm-api-queue.tenant.proj_a"])
        app = queue.celery.amqp
        added = app.queues["llm-api-queue.tenant.proj_a"]
        assert added.queue_arguments == {"x-max-priority": 10} and added.durable
        assert app.router.queues is app.queues  # where send_task looks a queue up
        queue.add_queues(["llm-api-queue.tenant.proj_a"])
        assert app.queues["llm-api-queue.tenant.proj_a"] is added  # added once
    finally:
        queue.close()
