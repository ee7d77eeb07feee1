"""OpenAI's Batch API (api/openai/batches/router.py): create, list, retrieve and cancel a
batch of the request's own, its owner never shown; over the local file store."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from api.errors import BatchNotFound, SpendLimitReached, TooManyRequests
from api.limits import request_models
from api.observability.metrics import Metrics
from api.openai.batches.doorbell import Doorbell
from api.openai.batches.router import CreateBatch, batches_router
from api.openai.batches.store import Batches
from api.openai.files.store import Files
from api.openai.http import OpenAIRoute
from api.tenancy.quotas import Quotas as SpendQuotas
from shared.contract.scripts import ADMIT
from shared.registry import load_registry
from shared.storage.file_store import FileStore
from shared.tenants import Owner, Quotas, Tenant
from tests.unit.api.edge import FakeRedis, config, http_edge

pytestmark = pytest.mark.unit

ALPHA, BETA = Owner("tenant:alpha"), Owner("tenant:beta")
LINE = json.dumps({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
                   "body": {"messages": [{"role": "user", "content": "x"}]}}).encode()  # fmt: skip


def endpoints(tmp_path: Path, redis: FakeRedis | None = None) -> tuple[Files, dict[str, Any]]:
    settings = config(file_store_url=str(tmp_path))
    files = Files(settings, FileStore(str(tmp_path)), load_registry(settings), request_models(settings))
    quotas = SpendQuotas(settings, redis or FakeRedis(), Metrics())  # type: ignore[arg-type]
    router = batches_router(Batches(files, Doorbell()), OpenAIRoute.at(http_edge(settings)), quotas)
    return files, {route.name: route.endpoint for route in router.routes}  # type: ignore[attr-defined]


def test_a_batch_is_its_owners_listed_newest_first_and_cancelled(tmp_path: Path) -> None:
    async def main() -> None:
        files, found = endpoints(tmp_path)
        upload = await files.create(io.BytesIO(LINE), "in.jsonl", "batch", ALPHA)
        body = CreateBatch(input_file_id=upload["id"], endpoint="/v1/chat/completions", metadata={"run": "nightly"})
        first = await found["create_batch"](body, ALPHA, Tenant("alpha"))
        second = await found["create_batch"](body, ALPHA, Tenant("alpha"))
        assert first["status"] == "validating" and first["metadata"] == {"run": "nightly"} and "owner" not in first
        listed = await found["list_batches"](ALPHA, None, 1)
        assert [b["id"] for b in listed["data"]] == [second["id"]] and listed["has_more"]
        assert (await found["list_batches"](BETA))["data"] == []
        with pytest.raises(BatchNotFound):
            await found["get_batch"](first["id"], BETA)
        assert (await found["get_batch"](first["id"], ALPHA))["id"] == first["id"]
        assert (await found["cancel_batch"](first["id"], ALPHA))["status"] == "cancelling"
        with pytest.raises(TooManyRequests, match="quota batches_in_flight"):
            await found["create_batch"](body, ALPHA, Tenant("alpha", quotas=Quotas(batches_in_flight=2)))

    asyncio.run(main())


def test_a_batchs_body_is_openais() -> None:
    assert CreateBatch(input_file_id="f", endpoint="/v1/embeddings").completion_window == "24h"
    assert CreateBatch(input_file_id="f", endpoint="/v1/responses", completion_window="8h").completion_window == "8h"
    for wrong in ({"endpoint": "/v1/images"}, {"endpoint": "/v1/completions", "completion_window": "0h"},
                  {"endpoint": "/v1/completions", "completion_window": "1d"}):  # fmt: skip
        with pytest.raises(ValidationError):
            CreateBatch.model_validate({"input_file_id": "f", **wrong})


def test_no_batch_is_made_for_a_project_whose_spend_reached_its_limit(tmp_path: Path) -> None:
    async def main() -> None:
        redis = FakeRedis()
        redis.scripts[ADMIT] = lambda *_: [b"spend_limit", 2_000_000_000]
        files, found = endpoints(tmp_path, redis)
        upload = await files.create(io.BytesIO(LINE), "in.jsonl", "batch", ALPHA)
        body = CreateBatch(input_file_id=upload["id"], endpoint="/v1/chat/completions")
        with pytest.raises(SpendLimitReached, match="monthly spend limit"):
            await found["create_batch"](body, ALPHA, Tenant("alpha", spend_limit=100))
        assert (await found["list_batches"](ALPHA))["data"] == []
        # Without a limit, nothing is asked of Redis.
        redis.ran.clear()
        await found["create_batch"](body, ALPHA, Tenant("alpha"))
        assert not redis.ran

    asyncio.run(main())
