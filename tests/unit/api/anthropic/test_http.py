"""Anthropic's edge (api/anthropic/http.py): every error in Anthropic's format with the
statuses the ``anthropic`` SDKs map to their exceptions (an invalid body a 400 naming
its field, a full queue a 529, a tenant's own limit a 429), and the key taken from
``x-api-key`` as well as ``Authorization: Bearer``."""

from __future__ import annotations

import asyncio

import pytest
from fastapi import APIRouter, FastAPI
from pydantic import BaseModel

from api.anthropic.http import AnthropicRoute, anthropic_error, anthropic_status
from api.errors import InvalidInput, ModelNotFound, QueueFull, TooManyRequests
from api.http.statuses import Refusal
from tests.unit.api.edge import config, http_edge
from tests.unit.api.http.asgi import request

pytestmark = pytest.mark.unit


class Body(BaseModel):
    n: int
    content: str | list[dict[str, int]] = ""


def app(**settings: str) -> FastAPI:
    router = APIRouter(route_class=AnthropicRoute.at(http_edge(config(**settings))))

    @router.post("/v1/messages")
    async def messages(body: Body) -> dict[str, int]:
        failures = {
            404: ModelNotFound("no model 'x'"),
            429: TooManyRequests("quota", retry_after=7),
            529: QueueFull("queue full", retry_after=3),
            422: InvalidInput("max_tokens: 9; at most 8"),
        }
        if body.n in failures:
            raise failures[body.n]
        return {"n": body.n}

    built = FastAPI()
    built.include_router(router)
    return built


def test_errors_are_anthropics_objects_with_anthropics_statuses() -> None:
    served = app()

    def post(body: bytes) -> tuple[int, dict[str, str], object]:
        answer = asyncio.run(request(served, "POST", "/v1/messages", body))
        return answer.status, answer.headers, answer.json()

    assert post(b'{"n": 404}')[::2] == (404, anthropic_error(404, "no model 'x'"))
    status, headers, said = post(b'{"n": 529}')
    assert status == 529 and said == {"type": "error", "error": {"type": "overloaded_error", "message": "queue full"}}
    assert headers["retry-after"] == "3"
    status, headers, said = post(b'{"n": 429}')
    assert status == 429 and said["error"]["type"] == "rate_limit_error" and headers["retry-after"] == "7"  # type: ignore[index]
    assert post(b'{"n": 422}')[::2] == (400, anthropic_error(400, "max_tokens: 9; at most 8"))
    # A body that does not validate: a 400 naming the field as the client wrote it,
    # without pydantic's names for the members of a union.
    status, _, said = post(b'{"n": 1, "content": [{"a": "x"}]}')
    assert status == 400 and said["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert said["error"]["message"].startswith("content.0.a: ")  # type: ignore[index]
    assert post(b"{}")[2]["error"]["message"] == "n: Field required"  # type: ignore[index]
    assert post(b'{"n": 1}')[::2] == (200, {"n": 1})


def test_the_key_is_read_from_x_api_key_or_a_bearer_and_its_lack_says_both() -> None:
    served = app(api_keys="the-key")
    body = b'{"n": 1}'
    assert asyncio.run(request(served, "POST", "/v1/messages", body, {"x-api-key": "the-key"})).status == 200
    bearer = {"authorization": "Bearer the-key"}
    assert asyncio.run(request(served, "POST", "/v1/messages", body, bearer)).status == 200
    wrong = asyncio.run(request(served, "POST", "/v1/messages", body, {"x-api-key": "other"}))
    assert wrong.status == 401 and wrong.json() == anthropic_error(401, "invalid API key")
    missing = asyncio.run(request(served, "POST", "/v1/messages", body))
    assert missing.status == 401 and missing.json()["error"]["type"] == "authentication_error"
    assert "x-api-key" in missing.json()["error"]["message"] and "Bearer" in missing.json()["error"]["message"]


def test_a_status_anthropic_has_no_type_for_is_an_api_error_and_keeps_its_status() -> None:
    assert anthropic_error(502, "down")["error"]["type"] == "api_error"
    assert anthropic_status(Refusal(502, "down", "ModelServerFailed")) == 502
    assert anthropic_status(Refusal(504, "slow", "JobTimedOut")) == 504
    assert anthropic_error(504, "slow")["error"]["type"] == "timeout_error"
    assert anthropic_status(Refusal(429, "full", "QueueFull"), QueueFull("full")) == 529
