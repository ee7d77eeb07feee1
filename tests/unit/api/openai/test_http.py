"""OpenAI's edge (api/openai/http.py): every error in OpenAI's format, with the statuses
the ``openai`` client maps to its exceptions; a body that does not validate is a 400."""

from __future__ import annotations

import asyncio

import pytest
from fastapi import APIRouter, FastAPI
from pydantic import BaseModel

from api.errors import ModelNotFound, QueueFull, SpendLimitReached
from api.http.statuses import Refusal
from api.openai.http import OpenAIRoute, openai_error
from tests.unit.api.edge import http_edge
from tests.unit.api.http.asgi import request

pytestmark = pytest.mark.unit


class Body(BaseModel):
    n: int


def app() -> FastAPI:
    router = APIRouter(route_class=OpenAIRoute.at(http_edge()))

    @router.post("/v1/things")
    async def things(body: Body) -> dict[str, int]:
        if body.n == 404:
            raise ModelNotFound("no model 'x'")
        if body.n == 429:
            raise QueueFull("queue full", retry_after=3)
        if body.n == 402:
            raise SpendLimitReached("project 'p' reached its monthly spend limit")
        return {"n": body.n}

    built = FastAPI()
    built.include_router(router)
    return built


def test_errors_are_openais_objects_with_their_type_param_and_code() -> None:
    served = app()
    missing = asyncio.run(request(served, "POST", "/v1/things", b'{"n": 404}'))
    assert missing.status == 404
    assert missing.json() == {"error": {"message": "no model 'x'", "type": "not_found_error", "param": None,
                                        "code": 404}}  # fmt: skip
    busy = asyncio.run(request(served, "POST", "/v1/things", b'{"n": 429}'))
    assert busy.json()["error"]["type"] == "rate_limit_error" and busy.headers["retry-after"] == "3"
    invalid = asyncio.run(request(served, "POST", "/v1/things", b'{"n": "many"}'))
    assert invalid.status == 400  # OpenAI's BadRequestError, not FastAPI's 422
    assert invalid.json()["error"]["param"] == "n" and invalid.json()["error"]["type"] == "invalid_request_error"
    assert asyncio.run(request(served, "POST", "/v1/things", b'{"n": 1}')).json() == {"n": 1}


def test_a_status_openai_has_no_type_for_is_an_api_error() -> None:
    assert openai_error(Refusal(500, "bug", "RuntimeError"))["error"]["type"] == "api_error"
    assert openai_error(Refusal(502, "down", "ModelServerFailed"))["error"]["type"] == "model_server_error"


def test_a_spend_limit_reached_is_a_429_of_type_and_code_insufficient_quota() -> None:
    answer = asyncio.run(request(app(), "POST", "/v1/things", b'{"n": 402}'))
    assert answer.status == 429 and answer.headers["x-should-retry"] == "false"
    assert answer.json() == {"error": {"message": "project 'p' reached its monthly spend limit",
                                       "type": "insufficient_quota", "param": None,
                                       "code": "insufficient_quota"}}  # fmt: skip
