"""The composition root (api/main.py): every endpoint but the probes behind the gateway's
route classes (a key asked for, errors from the one table, OpenAI's format on /v1 and
Anthropic's on /v1/messages), a
misconfigured part stopping the start, and the interactive docs served by the API
itself. Building the app connects to nothing: no broker, no Redis; requests go straight
to its ASGI callable (tests/unit/api/http/asgi.py)."""

from __future__ import annotations

import asyncio
import json
import re
from importlib import resources
from pathlib import Path

import pytest
from fastapi.routing import APIRoute
from starlette.routing import Mount

from api.main import DOCS_ASSETS, create_app
from shared.webhooks import WebhookConfigError
from tests.unit.api.edge import config
from tests.unit.api.http.asgi import request

pytestmark = pytest.mark.unit


def test_every_endpoint_but_the_probes_asks_for_a_key_and_v1_answers_in_openais_format(tmp_path: Path) -> None:
    # Refused by the route class before anything is read or asked of Redis: the app's
    # parts are never started here.
    app = create_app(config(api_keys="the-key", file_store_url=str(tmp_path)))
    paths = app.openapi()["paths"]
    assert {"/generate", "/chat_completion", "/jobs/{job_id}", "/models", "/v1/chat/completions", "/v1/completions",
            "/v1/embeddings", "/v1/models", "/v1/responses", "/v1/responses/input_tokens", "/v1/responses/compact",
            "/v1/messages", "/v1/messages/count_tokens",
            "/v1/conversations", "/v1/conversations/{conversation_id}/items/{item_id}", "/v1/files", "/v1/batches",
            "/usage", "/metrics", "/scaling", "/health", "/ready"} <= set(paths)  # fmt: skip
    asked = [(method.upper(), path) for path, methods in paths.items() for method in methods
             if path not in ("/health", "/ready")]  # fmt: skip
    for method, path in asked:
        concrete = re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES[m.group(1)], path)
        answer = asyncio.run(request(app, method, concrete))
        assert answer.status == 401, (method, path, answer.status)
        said = answer.json()
        assert (said["error"]["type"] == "authentication_error") if path.startswith("/v1/") else ("detail" in said)
        if path.startswith("/v1/messages"):  # Anthropic's shape there
            assert said["type"] == "error" and set(said["error"]) == {"type", "message"}
    assert asyncio.run(request(app, "GET", "/health")).json() == {"status": "ok"}


PATH_VALUES = {
    "job_id": "j1",
    "file_id": "file-x",
    "batch_id": "batch_x",
    "response_id": "resp_x",
    "conversation_id": "conv_x",
    "item_id": "msg_x",
    "project_id": "proj_x",
    "service_account_id": "svc_acct_x",
    "api_key_id": "key_x",
    "rate_limit_id": "rl-x",
    "key_id": "key_x",
}


def test_a_misconfigured_webhook_endpoint_stops_the_api(tmp_path: Path) -> None:
    wrong = config(webhooks=json.dumps([{"url": "https://x/y", "secret": "not-a-whsec"}]),
                   file_store_url=str(tmp_path))  # fmt: skip
    with pytest.raises(WebhookConfigError):
        create_app(wrong)


def test_the_interactive_docs_are_served_from_the_apis_own_assets(tmp_path: Path) -> None:
    app = create_app(config(file_store_url=str(tmp_path)))
    assert [route for route in app.routes if isinstance(route, Mount) and route.path == DOCS_ASSETS]
    served = Path(str(resources.files("fastapi_offline") / "static"))
    for name in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png"):
        assert (served / name).is_file(), name
    docs = {route.path: route for route in app.routes if isinstance(route, APIRoute)}
    assert "/docs" in docs and "/redoc" in docs and not docs["/docs"].include_in_schema
    assert app.openapi()["info"]["title"] == "LLM API"
