"""The Conversations API's routes (api/openai/conversations/router.py), through an app of
the gateway's OpenAI route class (keys checked, errors in OpenAI's format): a
conversation is its key's tenant's, an admin key names another's with ``?tenant=``, and
the SDK's query parameters are taken."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from api.openai.conversations.router import conversations_router
from api.openai.conversations.serving import Conversations
from api.openai.http import OpenAIRoute
from api.openai.responses.sealing import CompactionSeal
from shared.storage.conversation_files import ConversationFiles
from shared.storage.file_store import FileStore
from tests.unit.api.edge import config, http_edge
from tests.unit.api.http.asgi import Answer, request

pytestmark = pytest.mark.unit

TENANTS = """tenants:
  - {name: alpha, keys: [alpha-key]}
  - {name: beta, keys: [beta-key]}
  - {name: ops, keys: [ops-key], admin: true}
"""


def app_in(tmp_path: Path) -> FastAPI:
    keys = tmp_path / "tenants.yaml"
    keys.write_text(TENANTS)
    settings = config(api_keys_file=str(keys), file_store_url=str(tmp_path / "store"))
    app = FastAPI()
    conversations = Conversations(
        ConversationFiles(FileStore(str(tmp_path / "store"))),
        CompactionSeal(config(compaction_secret="a-unit-tests-compaction-secret-32chars")),
    )
    app.include_router(conversations_router(conversations, OpenAIRoute.at(http_edge(settings))))
    return app


def ask(app: FastAPI, method: str, path: str, key: str, body: Any = None) -> Answer:
    data = json.dumps(body).encode() if body is not None else b""
    return asyncio.run(request(app, method, path, data, headers={"Authorization": f"Bearer {key}"}))


def test_a_conversation_is_its_tenants_and_an_admin_names_another(tmp_path: Path) -> None:
    app = app_in(tmp_path)
    made = ask(app, "POST", "/v1/conversations", "alpha-key", {"items": [{"role": "user", "content": "hi"}]})
    assert made.status == 200
    cid = made.json()["id"]
    assert ask(app, "GET", f"/v1/conversations/{cid}", "alpha-key").json() == made.json()
    for path in (f"/v1/conversations/{cid}", f"/v1/conversations/{cid}?tenant=alpha",
                 f"/v1/conversations/{cid}/items"):  # fmt: skip
        refused = ask(app, "GET", path, "beta-key")
        assert refused.status == 404, path
        assert refused.json()["error"]["message"] == f"no conversation {cid!r}: never made, or deleted"
    assert ask(app, "GET", f"/v1/conversations/{cid}?tenant=alpha", "ops-key").json() == made.json()
    assert ask(app, "GET", f"/v1/conversations/{cid}", "ops-key").status == 404  # its own tenant's: none
    named = ask(app, "POST", f"/v1/conversations/{cid}?tenant=alpha", "ops-key", {"metadata": {"by": "ops"}})
    assert named.json()["metadata"] == {"by": "ops"}
    assert ask(app, "DELETE", f"/v1/conversations/{cid}", "beta-key").status == 404
    assert ask(app, "DELETE", f"/v1/conversations/{cid}", "alpha-key").json()["deleted"] is True
    assert ask(app, "GET", f"/v1/conversations/{cid}", "alpha-key").status == 404


def test_items_are_listed_added_read_and_deleted_with_the_sdks_parameters(tmp_path: Path) -> None:
    app = app_in(tmp_path)
    cid = ask(app, "POST", "/v1/conversations", "alpha-key", {}).json()["id"]
    items = [{"role": "user", "content": f"m{n}"} for n in range(3)]
    added = ask(app, "POST", f"/v1/conversations/{cid}/items?include[]=message.output_text.logprobs", "alpha-key",
                {"items": items})  # fmt: skip
    assert added.status == 200 and len(added.json()["data"]) == 3
    listed = ask(app, "GET", f"/v1/conversations/{cid}/items?order=asc&limit=2&include[]=x", "alpha-key").json()
    assert [item["content"][0]["text"] for item in listed["data"]] == ["m0", "m1"] and listed["has_more"]
    newest = ask(app, "GET", f"/v1/conversations/{cid}/items", "alpha-key").json()  # desc, by default
    assert [item["content"][0]["text"] for item in newest["data"]] == ["m2", "m1", "m0"]
    item_id = listed["data"][0]["id"]
    assert ask(app, "GET", f"/v1/conversations/{cid}/items/{item_id}", "alpha-key").json() == listed["data"][0]
    assert ask(app, "GET", f"/v1/conversations/{cid}/items/{item_id}", "beta-key").status == 404
    left = ask(app, "DELETE", f"/v1/conversations/{cid}/items/{item_id}", "alpha-key")
    assert left.json()["object"] == "conversation" and left.json()["id"] == cid
    assert ask(app, "GET", f"/v1/conversations/{cid}/items/{item_id}", "alpha-key").status == 404


def test_what_the_routes_refuse_each_refusal_naming_its_field(tmp_path: Path) -> None:
    app = app_in(tmp_path)
    cid = ask(app, "POST", "/v1/conversations", "alpha-key", {}).json()["id"]
    assert ask(app, "GET", f"/v1/conversations/{cid}", "wrong-key").status == 401
    items = f"/v1/conversations/{cid}/items"
    asked = {"/v1/conversations/not-a-conversation": "conversation_id", f"{items}?limit=0": "limit",
             f"{items}?limit=101": "limit", f"{items}?order=new": "order"}  # fmt: skip
    for path, field in asked.items():
        refused = ask(app, "GET", path, "alpha-key")
        assert (refused.status, refused.json()["error"]["param"]) == (400, field), path
    bodies = [("items", {"items": [{"role": "user", "content": "x"}] * 21}), ("items", {"items": []}),
              ("items.0.message.role", {"items": [{"role": "tool", "content": "x"}]})]  # fmt: skip
    for field, body in bodies:
        refused = ask(app, "POST", f"/v1/conversations/{cid}/items", "alpha-key", body)
        assert (refused.status, refused.json()["error"]["param"]) == (400, field), body
    metadata = {"metadata": {f"k{n}": "v" for n in range(17)}}
    refused = ask(app, "POST", "/v1/conversations", "alpha-key", metadata)
    assert (refused.status, refused.json()["error"]["param"]) == (400, "metadata")
    assert ask(app, "GET", f"/v1/conversations/{cid}/items", "alpha-key").json()["data"] == []  # nothing added
