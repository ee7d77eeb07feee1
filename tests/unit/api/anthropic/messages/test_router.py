"""``/v1/messages`` and its count_tokens (api/anthropic/messages/router.py): the
deployment's bodies behind Anthropic's route class, Anthropic's headers accepted."""

from __future__ import annotations

import asyncio

import pytest

from api.anthropic.http import AnthropicRoute
from api.anthropic.messages.router import messages_router
from api.limits import request_models
from tests.unit.api.edge import config, http_edge

pytestmark = pytest.mark.unit

BODY = b'{"model": "m", "messages": [{"role": "user", "content": "x"}]}'


def test_the_endpoints_take_the_deployments_bodies_behind_anthropics_route_class() -> None:
    settings = config(max_tokens_limit=64, max_messages=3)
    models = request_models(settings)
    create, count = messages_router(models, None, AnthropicRoute.at(http_edge(settings))).routes  # type: ignore[arg-type]
    assert (create.path, count.path) == ("/v1/messages", "/v1/messages/count_tokens")  # type: ignore[attr-defined]
    assert issubclass(type(create), AnthropicRoute) and issubclass(type(count), AnthropicRoute)
    assert create.body_field.field_info.annotation is models.anthropic_messages  # type: ignore[attr-defined]
    assert count.body_field.field_info.annotation is models.anthropic_count_tokens  # type: ignore[attr-defined]
    # The deployment's limits are written in the schema a client reads.
    schema = models.anthropic_messages.model_json_schema()["properties"]
    assert schema["max_tokens"]["maximum"] == 64 and schema["messages"]["maxItems"] == 3


def test_anthropics_headers_are_accepted_and_the_key_read_from_x_api_key() -> None:
    from fastapi import FastAPI

    from tests.unit.api.http.asgi import request

    settings = config(api_keys="the-key")
    app = FastAPI()
    app.include_router(messages_router(request_models(settings), None, AnthropicRoute.at(http_edge(settings))))  # type: ignore[arg-type]
    headers = {"x-api-key": "the-key", "anthropic-version": "2023-06-01", "anthropic-beta": "anything-2025"}
    # A body that does not validate: refused after the key and headers were taken.
    answer = asyncio.run(request(app, "POST", "/v1/messages?beta=true", BODY, headers))
    assert answer.status == 400 and answer.json()["error"]["message"].startswith("max_tokens: Field required")
