"""The Responses API's endpoints (api/openai/responses/router.py): a response of the
request's tenant (an admin's ``?tenant=`` another's), and a resumed stream's place from
``starting_after`` or ``Last-Event-ID``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute

from api.errors import ResponseNotFound
from api.limits import request_models
from api.observability.server_timing import Timing
from api.openai.responses.router import responses_router
from shared.contract import STREAM_END, STREAM_INDEX, STREAM_TEXT
from shared.tenants import Tenant
from tests.unit.api.edge import Parts, config, running_parts
from tests.unit.api.openai.responses.served import responses_of

pytestmark = pytest.mark.unit

ALPHA, BETA, ADMIN = Tenant("alpha"), Tenant("beta"), Tenant("ops", admin=True)


def endpoints(parts: Parts, root: Path) -> tuple[Any, dict[str, Any]]:
    models = request_models(parts.config)
    router = responses_router(models, responses_of(parts, root), APIRoute)  # type: ignore[arg-type]
    return models, {route.name: route.endpoint for route in router.routes}  # type: ignore[attr-defined]


def test_a_response_is_its_tenants_and_an_admin_names_another_tenants(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_parts() as parts:
            models, found = endpoints(parts, tmp_path)
            made = await found["create_response"](models.responses(input="hi", background=True), ALPHA, Timing(0.0))
            assert (await found["retrieve_response"](made["id"], ALPHA, Timing(0.0)))["status"] == "queued"
            with pytest.raises(ResponseNotFound):
                await found["retrieve_response"](made["id"], BETA, Timing(0.0))
            with pytest.raises(ResponseNotFound):
                await found["cancel_response"](made["id"], BETA, "alpha")
            assert (await found["cancel_response"](made["id"], ADMIN, "alpha"))["status"] == "cancelled"
            items = await found["list_input_items"](made["id"], ALPHA)
            assert [item["content"][0]["text"] for item in items["data"]] == ["hi"]
            assert (await found["delete_response"](made["id"], ALPHA))["deleted"] is True

    asyncio.run(main())


def test_a_stream_resumed_with_last_event_id_starts_after_it(tmp_path: Path) -> None:
    # The stream is followed as its owner's job: a tenant of the deployment's.
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text("tenants:\n  - {name: alpha, keys: [alpha-key]}\n")

    async def main() -> None:
        async with running_parts(config(api_keys_file=str(tenants))) as parts:
            models, found = endpoints(parts, tmp_path)
            made = await found["create_response"](models.responses(input="hi", background=True), ALPHA, Timing(0.0))
            stream = parts.config.keys.stream(f"alpha~{made['id']}")
            parts.redis.xadd_now(stream, {STREAM_INDEX: 0, STREAM_TEXT: "hello"})
            parts.redis.xadd_now(stream, {STREAM_END: json.dumps({"content": "hello", "finish_reason": "stop"})})
            whole = await found["retrieve_response"](made["id"], ALPHA, Timing(0.0), stream=True)
            every = [part async for part in whole.body_iterator]
            resumed = await found["retrieve_response"](made["id"], ALPHA, Timing(0.0), stream=True,
                                                       last_event_id="3")  # fmt: skip
            assert [part async for part in resumed.body_iterator] == every[4:]
            assert every[-1].startswith(f"id: {len(every) - 1}\nevent: response.completed")

    asyncio.run(main())
