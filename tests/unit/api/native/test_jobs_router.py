"""``GET`` and ``DELETE /jobs/{job_id}`` (api/native/jobs_router.py): a job of the
request's tenant, its status or its cancellation; another tenant's is not there (an
admin's ``?tenant=`` excepted). On the real job store over a fake Redis and broker."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
from fastapi.routing import APIRoute

from api.errors import JobConflict, JobNotFound
from api.jobs.webhook_events import WebhookEvents
from api.native.jobs_router import jobs_router
from shared.contract import TaskName
from shared.tenants import Tenant, Tenants
from tests.unit.api.edge import Parts, config, running_parts

pytestmark = pytest.mark.unit

ALPHA, BETA, ADMIN = Tenant("alpha"), Tenant("beta"), Tenant("ops", admin=True)
SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
HOOKS = json.dumps([{"url": "https://hooks.example.com/x", "secret": SECRET, "events": ["job.cancelled"]}])


KEYED = Tenants(by_digest={b"a": ALPHA, b"b": BETA, b"o": ADMIN})


def endpoints(parts: Parts, tenants: Tenants = KEYED) -> dict[str, Any]:
    router = jobs_router(parts.store, WebhookEvents(parts.config, parts.queue), tenants, APIRoute)
    return {next(iter(route.methods)): route.endpoint for route in router.routes}  # type: ignore[attr-defined]


async def queued(parts: Parts, tenant: Tenant, job_id: str = "j1", notify: bool | None = None) -> str:
    route, job = parts.routing.route(TaskName.GENERATE, job_id, {"meta": {}, "content": "hi"}, tenant)
    await parts.runner.submit(route, job, notify)
    return route.key


def test_a_job_is_its_tenants_and_another_tenants_job_of_the_same_id_is_not_there() -> None:
    async def main() -> None:
        async with running_parts() as parts:
            key = await queued(parts, ALPHA)
            status = await endpoints(parts)["GET"]("j1", ALPHA)
            assert (status.job_id, status.tenant, status.status, status.queue_position) == ("j1", "alpha", "queued", 1)
            with pytest.raises(JobNotFound, match="'j1'"):
                await endpoints(parts)["GET"]("j1", BETA)
            with pytest.raises(JobNotFound):
                await endpoints(parts)["GET"]("j1", BETA, "alpha")  # only an admin names another tenant
            assert (await endpoints(parts)["GET"]("j1", ADMIN, "alpha")).tenant == "alpha"
            parts.redis.finish(parts.config, key, result={"content": "echo: hi"})
            done = await endpoints(parts)["GET"]("j1", ALPHA)
            assert done.status == "succeeded" and done.result == {"content": "echo: hi"} and done.finished_at

    asyncio.run(main())


def test_the_server_that_answered_is_shown_to_admins_and_to_everyone_without_keys() -> None:
    async def main() -> None:
        async with running_parts() as parts:
            key = await queued(parts, ALPHA)
            answer = {"content": "echo: hi", "served_model": "large", "server": "10.0.0.7:8000"}
            parts.redis.finish(parts.config, key, result=answer)
            mine = await endpoints(parts)["GET"]("j1", ALPHA)
            assert mine.result == {"content": "echo: hi", "served_model": "large"}  # no address of the deployment's
            assert (await endpoints(parts)["GET"]("j1", ADMIN, "alpha")).result == answer
            assert (await endpoints(parts, Tenants())["GET"]("j1", ALPHA)).result == answer

    asyncio.run(main())


def test_cancelling_a_queued_job_cancels_it_once_and_a_finished_one_is_a_409() -> None:
    async def main() -> None:
        async with running_parts() as parts:
            await queued(parts, ALPHA, "j1")
            cancelled = await endpoints(parts)["DELETE"]("j1", ALPHA)
            assert cancelled.status == "cancelled"
            assert (await endpoints(parts)["DELETE"]("j1", ALPHA)).status == "cancelled"  # again: the same
            key = await queued(parts, ALPHA, "j2")
            parts.redis.finish(parts.config, key, result={"content": "done"})
            with pytest.raises(JobConflict, match="'j2' has already finished: succeeded"):
                await endpoints(parts)["DELETE"]("j2", ALPHA)
            with pytest.raises(JobNotFound):
                await endpoints(parts)["DELETE"]("never-queued", ALPHA)
            assert not [sent for sent in parts.broker.sent if sent.name == "webhook.deliver"]

    asyncio.run(main())


def test_a_job_submitted_for_webhooks_has_its_cancellation_sent_to_them() -> None:
    async def main() -> None:
        async with running_parts(config(webhooks=HOOKS), notify_jobs=True) as parts:
            key = await queued(parts, ALPHA, "j1")
            await endpoints(parts)["DELETE"]("j1", ALPHA)
            (delivery,) = [sent for sent in parts.broker.sent if sent.name == "webhook.deliver"]
            assert delivery.job["event"]["type"] == "job.cancelled" and delivery.job["event"]["data"] == {"id": key}

    asyncio.run(main())
