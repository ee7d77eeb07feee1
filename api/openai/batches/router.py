"""OpenAI's Batch API: ``/v1/batches`` (create, list, retrieve, cancel). With API keys
on, a key sees only its own batches."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from api.deps import OwnerDep, TenantDep
from api.openai.batches.store import Batches, public
from api.openai.files.router import listing
from api.openai.http import OpenAIRoute
from api.openai.types import ErrorBody
from api.tenancy.quotas import Quotas

BatchId = Annotated[str, Path(pattern=r"^batch_[A-Za-z0-9]{1,100}$")]

MetadataKey = Annotated[str, StringConstraints(max_length=64)]
MetadataValue = Annotated[str, StringConstraints(max_length=512)]


class CreateBatch(BaseModel):
    """Body of ``POST /v1/batches``."""

    model_config = ConfigDict(extra="ignore")

    input_file_id: str = Field(max_length=200, description="a file uploaded with purpose 'batch'")
    endpoint: Literal["/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/embeddings"]
    completion_window: str = Field(
        "24h",
        pattern=r"^[1-9][0-9]{0,5}[smh]$",
        description="'24h' as OpenAI; beyond OpenAI, any '<n>s', '<n>m' or '<n>h' (a nightly run: '8h')",
    )
    metadata: dict[MetadataKey, MetadataValue] | None = Field(None, max_length=16)


def batches_router(batches: Batches, route_class: type[OpenAIRoute], quotas: Quotas) -> APIRouter:
    """OpenAI's Batch API over the batches resource; a batch is not made for a project
    whose spend this month reached its spend limit (`quotas`)."""
    router = APIRouter(prefix="/v1", route_class=route_class, tags=["batches"], responses={400: {"model": ErrorBody}})

    @router.post("/batches")
    async def create_batch(body: CreateBatch, owner: OwnerDep, tenant: TenantDep) -> dict[str, Any]:
        """Run every request of an uploaded file (purpose ``batch``) as a job, below interactive traffic."""
        await quotas.check_spend(tenant)
        batch = await batches.create(
            body.input_file_id, body.endpoint, body.completion_window, body.metadata, owner, tenant.name,
            tenant.quotas.batches_in_flight, tenant.key_id,
        )  # fmt: skip
        return public(batch)

    @router.get("/batches")
    async def list_batches(
        owner: OwnerDep,
        after: str | None = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
    ) -> dict[str, Any]:
        """The batches (of the request's key), newest first."""
        chosen, more = await batches.page(owner, after, limit)
        return listing([public(b) for b in chosen], more)

    @router.get("/batches/{batch_id}", responses={404: {"model": ErrorBody}})
    async def get_batch(batch_id: BatchId, owner: OwnerDep) -> dict[str, Any]:
        """The batch: its status, its lines' counts, its output and error files once finished."""
        return public(await batches.get(batch_id, owner))

    @router.post("/batches/{batch_id}/cancel", responses={404: {"model": ErrorBody}, 409: {"model": ErrorBody}})
    async def cancel_batch(batch_id: BatchId, owner: OwnerDep) -> dict[str, Any]:
        """Cancel the batch: lines not started never start, running ones are stopped; the
        output file holds the lines that finished."""
        return public(await batches.cancel(batch_id, owner))

    return router
