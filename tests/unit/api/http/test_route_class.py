"""The route class of every endpoint (api/http/route_class.py): the key checked before
the body is read, bodies over the limit refused unread, strict JSON, every error from the
one table, an answer before the body's end closing the connection, and each request
counted and logged. Requests go straight to the ASGI app (tests/unit/api/http/asgi.py);
the guard counts in a fake Redis (tests/unit/api/edge.py)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from api.deps import OwnerDep, TenantDep, TimingDep
from api.errors import QueueFull
from api.http.route_class import STRANGER_DRAIN_BYTES, Access, Edge, GatewayRoute
from api.observability.metrics import Metrics
from api.tenancy.guard import Guard
from shared.config import Config
from tests.unit.api.edge import FakeRedis, config
from tests.unit.api.http.asgi import Answer, request

pytestmark = pytest.mark.unit


class Item(BaseModel):
    x: float


def app_of(settings: Config) -> tuple[FastAPI, Metrics]:
    metrics = Metrics()
    edge = Edge(settings, Guard(settings, FakeRedis(), metrics), metrics)  # type: ignore[arg-type]
    router = APIRouter(route_class=GatewayRoute.at(edge))

    @router.post("/items")
    async def create(item: Item, tenant: TenantDep, owner: OwnerDep, timing: TimingDep) -> dict[str, object]:
        timing.answered("m", {"queued_seconds": 0.0, "model_seconds": 0.0}, served_model="m-2")
        return {"x": item.x, "tenant": tenant.name, "owner": owner.name}

    @router.get("/full")
    async def full() -> None:
        raise QueueFull("queue full: 5 jobs waiting", retry_after=2)

    @router.get("/stream")
    async def stream() -> StreamingResponse:
        async def parts() -> AsyncIterator[str]:
            yield "data: 1\n\n"

        return StreamingResponse(parts(), media_type="text/event-stream")

    operators = APIRouter(route_class=GatewayRoute.at(edge, Access.OPERATOR))

    @operators.get("/figures")
    async def figures() -> dict[str, int]:
        return {"jobs": 1}

    app = FastAPI()
    app.include_router(router)
    app.include_router(operators)
    return app, metrics


def keyed(tmp_path: Path, **settings: object) -> Config:
    path = tmp_path / "tenants.yaml"
    path.write_text("tenants:\n  - {name: alpha, keys: [alpha-key]}\n  - {name: ops, keys: [ops-key], admin: true}\n")
    return config(api_keys_file=str(path), **settings)


def send(app: FastAPI, method: str, path: str, body: bytes | list[bytes] = b"", **options: object) -> Answer:
    return asyncio.run(request(app, method, path, body, **options))  # type: ignore[arg-type]


def test_a_request_reaches_its_endpoint_with_its_tenant_and_says_what_it_cost(tmp_path: Path) -> None:
    app, metrics = app_of(keyed(tmp_path))
    answer = send(app, "POST", "/items", b'{"x": 1.5}', headers={"Authorization": "Bearer alpha-key"})
    assert answer.status == 200 and answer.json() == {"x": 1.5, "tenant": "alpha", "owner": "tenant:alpha"}
    assert answer.headers["x-served-model"] == "m-2"
    assert {part.split(";")[0] for part in answer.headers["server-timing"].split(", ")} >= {"total", "gateway"}
    assert "connection" not in answer.headers  # the body was read whole: the connection stays
    counted = {"endpoint": "/items", "method": "POST", "status": "200"}
    assert metrics.registry.get_sample_value("llm_api_requests_total", counted) == 1


def test_a_request_without_a_valid_key_is_refused_before_its_body_is_read_past_a_little(tmp_path: Path) -> None:
    app, metrics = app_of(keyed(tmp_path))
    chunk = b"x" * (64 * 1024)
    upload = [chunk] * (2 * STRANGER_DRAIN_BYTES // len(chunk))  # 2 MiB, announced
    answer = send(app, "POST", "/items", upload, headers={"Authorization": "Bearer nope"})
    assert answer.status == 401 and answer.json() == {"detail": "invalid API key"}
    assert answer.headers["www-authenticate"] == "Bearer" and answer.headers["connection"] == "close"
    # A stranger is owed a small body's drain, no more.
    assert answer.chunks_read * len(chunk) <= STRANGER_DRAIN_BYTES + len(chunk) < len(upload) * len(chunk)
    assert metrics.registry.get_sample_value("llm_api_errors_total", {"cause": "Unauthorized"}) == 1


def test_a_body_announced_over_the_limit_is_refused_unread_and_one_sent_over_it_as_it_passes() -> None:
    app, _ = app_of(config(max_body_bytes=1024))
    announced = send(app, "POST", "/items", b'{"x": 1}', headers={"Content-Length": "5000", "Expect": "100-continue"})
    # A client waiting for "100 Continue" has sent nothing: answered at once, nothing read.
    assert announced.status == 413 and announced.chunks_read == 0 and announced.headers["connection"] == "close"
    assert "larger than 1024 bytes (MAX_BODY_BYTES" in announced.json()["detail"]
    streamed = send(app, "POST", "/items", [b'{"x": "', b"9" * 800, b"9" * 800, b'"}'], announce=False)
    assert streamed.status == 413 and streamed.chunks_read == 4  # the rest drained, so the answer is read


def test_a_json_body_a_double_or_text_cannot_hold_is_a_422_naming_its_field() -> None:
    app, _ = app_of(config())
    answer = send(app, "POST", "/items", b'{"x": NaN}', headers={"Content-Type": "application/json"})
    assert answer.status == 422 and answer.json() == {"detail": "body.x: NaN is not a finite number"}
    deep = send(app, "POST", "/items", b'{"x": ' + b"[" * 70 + b"]" * 70 + b"}")
    assert deep.status == 422 and "MAX_JSON_DEPTH" in deep.json()["detail"]
    invalid = send(app, "POST", "/items", b'{"x": "many"}')
    assert invalid.status == 422 and invalid.json()["detail"][0]["loc"] == ["body", "x"]


def test_an_error_is_answered_from_the_table_with_its_headers_and_counted_by_cause() -> None:
    app, metrics = app_of(config())
    answer = send(app, "GET", "/full")
    assert answer.status == 429 and answer.headers["retry-after"] == "2"
    assert answer.json() == {"detail": "queue full: 5 jobs waiting"}
    assert metrics.registry.get_sample_value("llm_api_errors_total", {"cause": "QueueFull"}) == 1
    missing = send(app, "GET", "/nowhere")  # not a route of the class: Starlette's own 404
    assert missing.status == 404


def test_an_operators_endpoint_refuses_a_tenants_key_and_answers_an_admins(tmp_path: Path) -> None:
    app, _ = app_of(keyed(tmp_path))
    assert send(app, "GET", "/figures", headers={"Authorization": "Bearer alpha-key"}).status == 403
    assert send(app, "GET", "/figures", headers={"Authorization": "Bearer ops-key"}).json() == {"jobs": 1}


def test_a_streamed_answers_headers_say_its_time_to_accept_only() -> None:
    app, _ = app_of(config())
    answer = send(app, "GET", "/stream")
    assert answer.body == b"data: 1\n\n" and answer.headers["server-timing"].startswith("accept;dur=")


def test_each_request_has_its_access_line_naming_its_tenant_status_and_client(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app, _ = app_of(keyed(tmp_path))
    with caplog.at_level(logging.INFO, logger="api.access"):
        send(app, "POST", "/items", b'{"x": 2}', headers={"Authorization": "Bearer alpha-key"})
    (line,) = [record for record in caplog.records if record.name == "api.access"]
    assert line.getMessage() == "POST /items 200"
    assert (line.tenant, line.status, line.client) == ("alpha", 200, "10.0.0.1:5000")  # type: ignore[attr-defined]
    assert json.dumps(line.__dict__, default=str).count("alpha-key") == 0
