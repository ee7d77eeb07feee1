"""Driving batches (api/openai/batches/keeper.py): a batch's lines run as jobs below
interactive traffic, each line's outcome recorded, the batch finalized with its output
and error files and its event; a file with lines for another endpoint fails the batch.
On the real job parts over a fake Redis and broker (tests/unit/api/edge.py) and the
local file store."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from api.jobs.recovery import LostJobs
from api.limits import request_models
from api.openai.batches.doorbell import Doorbell
from api.openai.batches.keeper import BatchKeeper, batch_tenant
from api.openai.batches.store import Batches
from api.openai.files.store import Files
from shared.registry import load_registry
from shared.storage.file_store import FileStore
from shared.tenants import EVERYONE
from tests.unit.api.edge import Parts, Sent, config, running_parts

pytestmark = pytest.mark.unit


def request(custom_id: str, content: str, url: str = "/v1/chat/completions") -> bytes:
    body = {"messages": [{"role": "user", "content": content}]}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body}).encode() + b"\n"


def worker(sent: Sent) -> dict[str, Any]:
    return {"content": "echo: " + sent.job["openai"]["messages"][-1]["content"], "finish_reason": "stop"}


@asynccontextmanager
async def driving(tmp_path: Path) -> AsyncIterator[tuple[Parts, Files, Batches, list[tuple[str, str]]]]:
    async with running_parts(config(file_store_url=str(tmp_path), wait_timeout=5)) as parts:
        registry, models, doorbell = load_registry(parts.config), request_models(parts.config), Doorbell()
        files = Files(parts.config, FileStore(str(tmp_path)), registry, models)
        batches = Batches(files, doorbell)
        lost = LostJobs(parts.config, parts.redis, parts.queue, parts.waiter, parts.published, parts.requeues,  # type: ignore[arg-type]
                        parts.fair)  # fmt: skip
        events: list[tuple[str, str]] = []
        heard = asyncio.Event()

        async def emit(kind: str, batch_id: str) -> None:
            events.append((kind, batch_id))
            heard.set()

        keeper = BatchKeeper(parts.config, batches, files, parts.runner, parts.routing, lost, parts.redis,  # type: ignore[arg-type]
                             registry, models, doorbell, emit)  # fmt: skip
        running = asyncio.create_task(keeper.run_forever())
        try:
            yield parts, files, batches, events
            await asyncio.wait_for(heard.wait(), 10)
            # The batch's drive ends after its event (its active marker removed last).
            await asyncio.wait_for(asyncio.gather(*keeper._driving.values()), 10)
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)


async def content(files: Files, file_id: str) -> list[dict[str, Any]]:
    return [json.loads(text) for text in b"".join(await files.content(file_id, EVERYONE)).splitlines()]


def test_a_batchs_lines_run_as_jobs_and_it_ends_with_its_output_and_error_files(tmp_path: Path) -> None:
    async def main() -> None:
        async with driving(tmp_path) as (parts, files, batches, events):
            failure = {"exc_type": "ModelServerRejected", "exc_message": ["too long", 400]}
            parts.broker.on_send = lambda sent: parts.answer(
                sent, *((failure, "FAILURE") if "fail" in json.dumps(sent.job) else (worker(sent),))
            )
            upload = io.BytesIO(request("a", "one") + request("b", "fail") + request("c", "three"))
            found = await files.create(upload, "in.jsonl", "batch", EVERYONE)
            batch = await batches.create(found["id"], "/v1/chat/completions", "24h", None, EVERYONE)
        done = await batches.get(batch["id"], EVERYONE)
        assert events == [("batch.completed", batch["id"])]
        assert done["status"] == "completed" and done["request_counts"] == {"total": 3, "completed": 2, "failed": 1}
        output = await content(files, done["output_file_id"])
        assert [(o["custom_id"], o["response"]["body"]["choices"][0]["message"]["content"]) for o in output] == [
            ("a", "echo: one"), ("c", "echo: three")]  # fmt: skip
        (error,) = await content(files, done["error_file_id"])
        assert error["custom_id"] == "b" and error["response"]["status_code"] == 400
        assert {sent.job["meta"]["priority"] for sent in parts.broker.sent} == {0}  # below interactive traffic
        assert all(sent.job["batch"]["id"] == batch["id"] for sent in parts.broker.sent)
        assert await batches.active() == []

    asyncio.run(main())


def test_a_batch_whose_lines_are_for_another_endpoint_fails_naming_them(tmp_path: Path) -> None:
    async def main() -> None:
        async with driving(tmp_path) as (parts, files, batches, events):
            upload = io.BytesIO(request("a", "x") + request("e", "x", "/v1/completions").replace(
                b'"body": {"messages": [{"role": "user", "content": "x"}]}', b'"body": {"prompt": "x"}'))  # fmt: skip
            found = await files.create(upload, "in.jsonl", "batch", EVERYONE)
            batch = await batches.create(found["id"], "/v1/chat/completions", "24h", None, EVERYONE)
        failed = await batches.get(batch["id"], EVERYONE)
        assert events == [("batch.failed", batch["id"])] and failed["status"] == "failed"
        (error,) = failed["errors"]["data"]
        assert error["line"] == 2 and "is not the batch's endpoint /v1/chat/completions" in error["message"]
        assert not parts.broker.sent

    asyncio.run(main())


def test_a_batchs_lines_are_run_for_its_tenant() -> None:
    assert batch_tenant({"tenant": "alpha"}).name == "alpha" and batch_tenant({}).name == "default"
    # Its lines' usage is counted to the key that made the batch, where that key has an id.
    assert batch_tenant({"tenant": "proj_a", "key_id": "key_1"}).key_id == "key_1"
    assert batch_tenant({"tenant": "alpha"}).key_id == ""
