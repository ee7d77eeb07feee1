"""``POST /v1/responses/compact``: a conversation made one compaction item, the model's own
summary of it, sealed (api/openai/responses/sealing.py). Given back as input (to
``/v1/responses``, over HTTP or a WebSocket), the item stands for the conversation it
compacted. The summary is a chat job like any other (the tenant's quotas, fair share,
usage); nothing of it is kept once answered. See docs/responses.md.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import ConfigDict, Field, GetJsonSchemaHandler, model_validator
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.deps import TenantDep, TimingDep
from api.jobs.route import JobRouting
from api.jobs.runner import JobRunner
from api.native.types import MODEL_PATTERN, Body
from api.observability.server_timing import Timing
from api.openai.http import OpenAIRoute
from api.openai.responses.sealing import SUMMARY_PROMPT, Compacted, CompactionSeal
from api.openai.responses.serving import Responses
from api.openai.responses.translate import chat_messages, check_tool_outputs, input_items, usage
from api.openai.responses.types import RESPONSE_ID_PATTERN, InputItem
from api.openai.types import MAX_EXTRA_FIELDS, ErrorBody
from shared.config import Config
from shared.contract import DEFAULT_PRIORITY, TaskName
from shared.tenants import Tenant

# The summary's length at most, in tokens (within MAX_TOKENS_LIMIT).
SUMMARY_TOKENS = 1024


class CompactRequest(Body):
    """Body of ``POST /v1/responses/compact``, as the ``openai`` SDK sends it. Fields of
    OpenAI's beyond these (prompt caching, service tiers, ...) are accepted and unused."""

    model_config = ConfigDict(strict=True, extra="allow")

    model: str = Field(pattern=MODEL_PATTERN, description="the model that writes the summary (required)")
    input: str | Annotated[list[InputItem], Field(min_length=1)] | None = Field(
        None, description="the conversation: a string (one user message), or items (compaction items too)"
    )
    instructions: str | None = None
    previous_response_id: str | None = Field(
        None, pattern=RESPONSE_ID_PATTERN, description="a stored response: its conversation comes first"
    )
    prompt_cache_key: str | None = Field(None, max_length=512)

    @model_validator(mode="after")
    def _something_to_compact(self) -> CompactRequest:
        if self.input is None and self.previous_response_id is None:
            raise ValueError("input: required, unless previous_response_id names the conversation to compact")
        if len(self.model_extra or {}) > MAX_EXTRA_FIELDS:
            raise ValueError(f"at most {MAX_EXTRA_FIELDS} fields beyond OpenAI's own")
        return self

    @classmethod
    def __get_pydantic_json_schema__(cls, core: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        schema = handler.resolve_ref_schema(handler(core))
        given = {"not": {"type": "null"}}
        schema["anyOf"] = [
            {"required": ["input"], "properties": {"input": given}},
            {"required": ["previous_response_id"], "properties": {"previous_response_id": given}},
        ]
        return schema

    def given(self) -> str | list[dict[str, Any]]:
        """`input` as sent: a string, or its items as dicts."""
        given = self.input if self.input is not None else []
        return given if isinstance(given, str) else [item.model_dump(by_alias=True) for item in given]


class Compactions:
    """A conversation compacted: the summary asked of the model through the queue, sealed."""

    def __init__(
        self, config: Config, routing: JobRouting, runner: JobRunner, responses: Responses, seal: CompactionSeal
    ) -> None:
        self._config = config
        self._routing = routing
        self._runner = runner
        self._responses = responses
        self._seal = seal

    async def compact(self, tenant: Tenant, body: CompactRequest, timing: Timing) -> dict[str, Any]:
        """The ``response.compaction`` object of `body`'s conversation."""
        self._seal.require()  # before the model is asked
        hex_id = uuid.uuid4().hex
        compaction_id = f"resp_{hex_id}"
        prior = body.previous_response_id
        history = await self._responses.conversation(tenant, prior) if prior else []
        items = input_items(body.given(), compaction_id)
        check_tool_outputs(history, items)
        asked = self._seal.expanded(tenant.name, [*history, *items], base=len(history))
        messages = [*chat_messages(body.instructions, asked), {"role": "user", "content": SUMMARY_PROMPT}]
        meta = {
            "temperature": 0.0,  # a summary, not a story
            "tokens_limit": min(SUMMARY_TOKENS, self._config.max_tokens_limit),
            "stop_words": [],
            "model": body.model,
            "priority": DEFAULT_PRIORITY,
            "sampling": {},
        }
        route, routed = self._routing.route(
            TaskName.CHAT, compaction_id, {"meta": meta, "openai": {"messages": messages}}, tenant
        )
        timing.ran(route)
        try:
            answer = await self._runner.run(route, routed, self._config.wait_timeout)
        finally:
            # Nothing of a compaction is kept: its summary lives in the sealed item alone.
            await self._responses.forget(route.key)
        timing.ran(route, answer)
        choice = (answer.get("choices") or [{"content": answer.get("content", "")}])[0]
        created = int(time.time())
        summary = Compacted(choice.get("content") or "", answer.get("model") or route.model, created)
        item = {"id": f"cmp_{hex_id}", "type": "compaction", "encrypted_content": self._seal.seal(tenant.name, summary)}
        return {
            "id": compaction_id,
            "object": "response.compaction",
            "created_at": created,
            "output": [item],
            "usage": usage(answer),
        }


def compact_router(compactions: Compactions, route_class: type[OpenAIRoute]) -> APIRouter:
    """``POST /v1/responses/compact``."""
    router = APIRouter(prefix="/v1/responses", route_class=route_class, tags=["responses"])

    @router.post("/compact", response_model=None, responses={400: {"model": ErrorBody}, 503: {"model": ErrorBody}})
    async def compact_conversation(body: CompactRequest, tenant: TenantDep, timing: TimingDep) -> dict[str, Any]:
        """Compact a conversation into one sealed compaction item, to give back as input."""
        return await compactions.compact(tenant, body, timing)

    @router.api_route("/compact", methods=["GET", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    async def compact_not_allowed() -> None:
        """Not a response's id: another method here is a 405, not GET /v1/responses/{id}'s 400."""
        raise StarletteHTTPException(405, "POST /v1/responses/compact only", headers={"Allow": "POST"})

    return router
