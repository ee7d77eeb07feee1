"""OpenAI's Files API: ``/v1/files`` (batches' input files, and their output and
error files). With API keys on, a key sees only its own files."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Path, Query, UploadFile
from fastapi.responses import StreamingResponse

from api.deps import OwnerDep, TenantDep
from api.openai.files.store import Files, public
from api.openai.http import OpenAIRoute
from api.openai.types import ErrorBody
from shared.config import Config

FileId = Annotated[str, Path(pattern=r"^file-[A-Za-z0-9_-]{1,100}$")]


class FilesRoute(OpenAIRoute):
    """An upload may be as large as BATCH_MAX_FILE_BYTES (and its multipart envelope)."""

    def body_limit(self, config: Config) -> int:
        return max(config.max_body_bytes, config.batch_max_file_bytes + 65536)


def listing(found: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    """OpenAI's list object."""
    return {
        "object": "list",
        "data": found,
        "first_id": found[0]["id"] if found else None,
        "last_id": found[-1]["id"] if found else None,
        "has_more": has_more,
    }


def page(found: list[dict[str, Any]], after: str | None, limit: int) -> tuple[list[dict[str, Any]], bool]:
    """The `limit` objects after the one with id `after`, and whether more follow."""
    if after is not None:
        ids = [item["id"] for item in found]
        found = found[ids.index(after) + 1 :] if after in ids else []
    return found[:limit], len(found) > limit


def files_router(files: Files, route_class: type[FilesRoute]) -> APIRouter:
    """OpenAI's Files API over the file store."""
    router = APIRouter(prefix="/v1", route_class=route_class, tags=["files"], responses={400: {"model": ErrorBody}})

    @router.post("/files")
    async def upload_file(
        owner: OwnerDep,
        tenant: TenantDep,
        file: Annotated[UploadFile, File(description="a JSONL file of requests, one per line")],
        purpose: Annotated[Literal["batch"], Form(description="'batch': files uploaded here are batches' input files")],
    ) -> dict[str, Any]:
        """Upload a batch's input file: each line is checked, and a file with bad lines is
        refused (400) naming each line and what is wrong with it."""
        return public(await files.create(file.file, file.filename or "", purpose, owner, tenant))

    @router.get("/files")
    async def list_files(
        owner: OwnerDep,
        purpose: str | None = None,
        limit: Annotated[int, Query(ge=1, le=10000)] = 10000,
        after: str | None = None,
        order: Literal["asc", "desc"] = "desc",
    ) -> dict[str, Any]:
        """The files (of the request's key), newest first."""
        found = await files.list(owner, purpose)
        if order == "asc":
            found.reverse()
        chosen, more = page(found, after, limit)
        return listing([public(f) for f in chosen], more)

    @router.get("/files/{file_id}", responses={404: {"model": ErrorBody}})
    async def get_file(file_id: FileId, owner: OwnerDep) -> dict[str, Any]:
        """The file's object."""
        return public(await files.get(file_id, owner))

    @router.get("/files/{file_id}/content", response_class=StreamingResponse, responses={404: {"model": ErrorBody}})
    async def file_content(file_id: FileId, owner: OwnerDep) -> StreamingResponse:
        """The file's content (JSONL)."""
        return StreamingResponse(await files.content(file_id, owner), media_type="application/octet-stream")

    @router.delete("/files/{file_id}", responses={404: {"model": ErrorBody}})
    async def delete_file(file_id: FileId, owner: OwnerDep) -> dict[str, Any]:
        """Remove the file."""
        return await files.delete(file_id, owner)

    return router
