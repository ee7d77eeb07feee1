"""OpenAI's Files API (api/openai/files/router.py): upload a batch's input file, list,
retrieve, read and delete the request's own files; uploads may be as large as the
batch file limit. Over the local file store."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import pytest
from starlette.datastructures import UploadFile

from api.errors import BadRequest, FileNotFound
from api.limits import request_models
from api.openai.files.router import FilesRoute, files_router, listing, page
from api.openai.files.store import Files
from shared.registry import load_registry
from shared.storage.file_store import FileStore
from shared.tenants import Owner, Tenant
from tests.unit.api.edge import config, http_edge

pytestmark = pytest.mark.unit

ALPHA, BETA = Owner("tenant:alpha"), Owner("tenant:beta")
LINE = json.dumps({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
                   "body": {"messages": [{"role": "user", "content": "x"}]}}).encode() + b"\n"  # fmt: skip


def endpoints(tmp_path: Path) -> dict[str, Any]:
    settings = config(file_store_url=str(tmp_path))
    files = Files(settings, FileStore(str(tmp_path)), load_registry(settings), request_models(settings))
    router = files_router(files, FilesRoute.at(http_edge(settings)))
    return {route.name: route.endpoint for route in router.routes}  # type: ignore[attr-defined]


def upload(content: bytes) -> UploadFile:
    return UploadFile(io.BytesIO(content), filename="in.jsonl")


def test_an_uploaded_file_is_its_owners_to_list_read_and_delete(tmp_path: Path) -> None:
    async def main() -> None:
        found = endpoints(tmp_path)
        made = await found["upload_file"](ALPHA, Tenant("alpha"), upload(LINE), "batch")
        assert (made["purpose"], made["bytes"], made["filename"]) == ("batch", len(LINE), "in.jsonl")
        assert "owner" not in made
        assert [f["id"] for f in (await found["list_files"](ALPHA))["data"]] == [made["id"]]
        assert (await found["list_files"](BETA))["data"] == []
        with pytest.raises(FileNotFound):
            await found["get_file"](made["id"], BETA)
        read = await found["file_content"](made["id"], ALPHA)
        assert b"".join([chunk async for chunk in read.body_iterator]) == LINE
        assert (await found["delete_file"](made["id"], ALPHA))["deleted"] is True
        with pytest.raises(FileNotFound):
            await found["get_file"](made["id"], ALPHA)

    asyncio.run(main())


def test_a_file_with_a_bad_line_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(BadRequest, match="line 2: not JSON"):
        asyncio.run(endpoints(tmp_path)["upload_file"](ALPHA, Tenant("alpha"), upload(LINE + b"{oops\n"), "batch"))


def test_pages_of_a_list_after_an_id() -> None:
    objects = [{"id": f"file-{n}"} for n in range(5)]
    assert page(objects, None, 2) == (objects[:2], True)
    assert page(objects, "file-2", 5) == (objects[3:], False)
    assert page(objects, "file-gone", 5) == ([], False)
    assert listing(objects[:2], True) == {"object": "list", "data": objects[:2], "first_id": "file-0",
                                          "last_id": "file-1", "has_more": True}  # fmt: skip
    assert listing([], False)["first_id"] is None


def test_an_upload_may_be_as_large_as_a_batch_file() -> None:
    settings = config(max_body_bytes=1024 * 1024, batch_max_file_bytes=100 * 1024 * 1024)
    route = files_router(None, FilesRoute.at(http_edge(settings))).routes[0]  # type: ignore[arg-type]
    assert route.body_limit(settings) == 100 * 1024 * 1024 + 65536  # type: ignore[attr-defined]
