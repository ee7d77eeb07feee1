"""``POST /v1/messages`` and ``POST /v1/messages/count_tokens``: Anthropic's Messages API,
each message run as an ``llm.chat`` job (api/anthropic/messages/serving.py). See
docs/anthropic.md.

``Idempotency-Key`` (not Anthropic's) plays the role of the job's id, as on OpenAI's
endpoints: a stream whose connection dropped is resumed by sending the same request with
the same key and ``Last-Event-ID``."""

from typing import Any

from fastapi import APIRouter, Response

from api.anthropic.http import AnthropicBeta, AnthropicErrorBody, AnthropicRoute, AnthropicVersion
from api.anthropic.messages.serving import Messages
from api.anthropic.messages.types import TokenCount
from api.deps import TenantDep, TimingDep
from api.limits import RequestModels
from api.openai.http import OPENAI_ANSWERS, IdempotencyKey, LastEventId


def messages_router(models: RequestModels, messages: Messages, route_class: type[AnthropicRoute]) -> APIRouter:
    """Anthropic's Messages API, with the request bodies of `models` (the deployment's limits)."""
    router = APIRouter(
        prefix="/v1/messages",
        route_class=route_class,
        tags=["anthropic"],
        responses={400: {"model": AnthropicErrorBody}, 529: {"description": "The queue is full: try again later"}},
    )

    @router.post("", response_model=None, responses=OPENAI_ANSWERS)
    async def create_message(
        body: models.anthropic_messages,  # type: ignore[name-defined]
        tenant: TenantDep,
        timing: TimingDep,
        idempotency_key: IdempotencyKey = None,
        last_event_id: LastEventId = None,
        anthropic_version: AnthropicVersion = None,
        anthropic_beta: AnthropicBeta = None,
    ) -> dict[str, Any] | Response:
        """Anthropic's message, run as an ``llm.chat`` job; streamed as Anthropic's events with ``stream: true``."""
        return await messages.create(tenant, body, idempotency_key, last_event_id, timing)

    @router.post(
        "/count_tokens",
        response_model=TokenCount,
        responses={
            404: {"description": "A model the registry does not list"},
            501: {"description": "The model's server counts no tokens (it serves no /tokenize)"},
            502: {"description": "The model's server is unreachable or failing"},
        },
    )
    async def count_message_tokens(
        body: models.anthropic_count_tokens,  # type: ignore[name-defined]
        tenant: TenantDep,
        anthropic_version: AnthropicVersion = None,
        anthropic_beta: AnthropicBeta = None,
    ) -> dict[str, Any]:
        """The tokens a message's prompt (system, messages, tools) would be to its model,
        counted by the model's server."""
        return await messages.count_tokens(tenant, body)

    return router
