"""``POST /v1/embeddings``: run as an ``llm.embed`` job."""

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import TenantDep, TimingDep
from api.limits import RequestModels
from api.native.types import new_job_id
from api.openai.embeddings.serving import Embeddings
from api.openai.http import IdempotencyKey, OpenAIRoute
from api.openai.types import ErrorBody


def embeddings_router(models: RequestModels, embedder: Embeddings, route_class: type[OpenAIRoute]) -> APIRouter:
    """``/v1/embeddings``, with the request body of `models`."""
    router = APIRouter(prefix="/v1", route_class=route_class, tags=["openai"], responses={400: {"model": ErrorBody}})

    @router.post("/embeddings", response_model=None)
    async def embeddings(
        body: models.embeddings,  # type: ignore[name-defined]
        tenant: TenantDep,
        timing: TimingDep,
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        """OpenAI's embeddings, run as an ``llm.embed`` job; jobs of a model arriving
        together share one model-server call (docs/embeddings.md)."""
        # Rendered as it is: FastAPI would first copy the answer, float by float, into
        # the same plain JSON values (jsonable_encoder), more than the rendering costs.
        return JSONResponse(await embedder.embed(tenant, idempotency_key or new_job_id(), body, timing))

    return router
