"""``GET /v1/models`` and ``GET /v1/models/{model}``: the models served, as OpenAI lists
them, those the request's project may use."""

from typing import Annotated

from fastapi import APIRouter, Path
from starlette.convertors import Convertor, register_url_convertor

from api.deps import TenantDep, TimingDep
from api.native.types import MODEL_PATTERN
from api.openai.http import OpenAIRoute
from api.openai.models.serving import ServedModels
from api.openai.models.types import ModelCard, ModelList
from api.openai.types import ErrorBody

ModelId = Annotated[str, Path(pattern=MODEL_PATTERN)]


class _AnyPath(Convertor[str]):
    """The rest of the path, whatever it holds: Starlette's `path` stops at a line break, so
    a name holding one matched no route and was answered Starlette's 404 (not OpenAI's
    error); matched, the name is checked as any other (400 naming `model`)."""

    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("any_path", _AnyPath())


def models_router(served: ServedModels, route_class: type[OpenAIRoute]) -> APIRouter:
    """``/v1/models``: the models of the registry, or its model server's."""
    router = APIRouter(prefix="/v1", route_class=route_class, tags=["openai"], responses={400: {"model": ErrorBody}})

    @router.get("/models", response_model=ModelList, summary="Models", operation_id="models_v1_models_get")
    async def served_models(tenant: TenantDep, timing: TimingDep) -> ModelList:
        """The models of the registry; with INNER_LLM_URL alone, those its model server
        serves (asked through the queue, kept 30 s); of them, those the project may use."""
        return ModelList(data=[ModelCard(id=name) for name in await served.served_models(tenant, timing)])

    @router.get(
        "/models/{model:any_path}",
        response_model=ModelCard,
        summary="Model",
        operation_id="model_v1_models_get",
        responses={404: {"model": ErrorBody}},
    )
    async def served_model(model: ModelId, tenant: TenantDep) -> ModelCard:
        """One model (a name or alias) a request may name: 404 as for a job naming it, for
        one the registry does not list or the project may not use."""
        return ModelCard(id=served.served_model(tenant, model))

    return router
