"""``GET /v1/models``: the models served, as OpenAI lists them."""

from fastapi import APIRouter

from api.deps import TenantDep, TimingDep
from api.openai.http import OpenAIRoute
from api.openai.models.serving import ServedModels
from api.openai.models.types import ModelCard, ModelList
from api.openai.types import ErrorBody
from shared.registry import Registry


def models_router(served: ServedModels, registry: Registry, route_class: type[OpenAIRoute]) -> APIRouter:
    """``/v1/models``: the models of `registry`, or its model server's."""
    router = APIRouter(prefix="/v1", route_class=route_class, tags=["openai"], responses={400: {"model": ErrorBody}})

    @router.get("/models", response_model=ModelList, summary="Models", operation_id="models_v1_models_get")
    async def served_models(tenant: TenantDep, timing: TimingDep) -> ModelList:
        """The models of the registry; with INNER_LLM_URL alone, those its model server
        serves (asked through the queue, kept 30 s)."""
        return ModelList(data=[ModelCard(id=name) for name in await served.served_models(registry, tenant, timing)])

    return router
