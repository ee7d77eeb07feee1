"""Publishing settings of the API's Celery app."""

from __future__ import annotations

import pytest

from api.jobs.queue import JobQueue
from shared.config import Config

pytestmark = pytest.mark.unit


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
