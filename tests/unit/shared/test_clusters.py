"""The API's queues with quorum queues: a busy model's tenant queues come in priority bands too."""

from __future__ import annotations

from typing import Any

import pytest

from api.jobs.queue import JobQueue
from shared.config import Config

pytestmark = pytest.mark.unit


def config(**settings: Any) -> Config:
    return Config(_env_file=None, **settings)  # type: ignore[call-arg]


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
