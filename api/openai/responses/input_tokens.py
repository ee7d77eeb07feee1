"""Counting a conversation's tokens as its model's server counts them, for
``POST /v1/responses/input_tokens``: asked of the model server by the API itself, not
queued (see docs/responses.md for why).

The servers' own ways, tried in turn and remembered per server:
- vLLM: ``POST /tokenize`` with the chat's ``messages`` (and ``tools``) answers
  ``{"count", "max_model_len", "tokens"}``, the chat template and the generation prompt
  counted as a chat completion's prompt is.
- llama.cpp: its ``/tokenize`` reads only ``content`` (a chat's body answers
  ``{"tokens": []}``), so the chat is made its prompt by ``POST /apply-template``, and that
  prompt counted by ``/tokenize`` as the server tokenizes a chat's (special tokens added
  and parsed).
A server serving neither (Ollama, TGI: 404) cannot count: NotServedByModelServer (501).

The model servers' tokenizers are shared by every tenant, and a count is not queued: so
each tenant may have at most TOKEN_COUNTS_PER_TENANT counts asked at once per API
process; one more is refused (429 naming that bound) at once, before any server is asked,
and another tenant's counts go on as before.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from api.errors import (
    ModelNotFound,
    ModelServerRefused,
    ModelServerUnanswered,
    NotServedByModelServer,
    TooManyRequests,
)
from shared.config import Config
from shared.registry import Model, Server

log = logging.getLogger(__name__)

VLLM, LLAMA_CPP = "vllm", "llama.cpp"
COUNT_TIMEOUT = 60.0  # seconds one server may take to count (a tokenizer is fast; the cap is for a hung one)
NOT_SERVED = frozenset({404, 405, 501})
MESSAGE_CHARS = 300  # of a server's refusal, passed on


class _NotServed(Exception):
    """This server serves no way of counting."""


class _Unanswered(Exception):
    """This server did not answer the count (why: for the log and the client, no address)."""


class TokenCounter:
    """Counts tokens on a model's servers; one per API process (its connections kept)."""

    def __init__(self, config: Config, client: httpx.AsyncClient | None = None) -> None:
        timeout = httpx.Timeout(min(config.llm_timeout, COUNT_TIMEOUT), connect=config.llm_connect_timeout)
        self._client = client or httpx.AsyncClient(timeout=timeout)
        self._ways: dict[tuple[str, str], str] = {}  # (model, server) → the way it counted last
        self._per_tenant = config.token_counts_per_tenant  # 0: no bound
        self._counting: dict[str, int] = {}  # tenant → its counts asked now, on this process

    async def close(self) -> None:
        await self._client.aclose()

    async def count(
        self,
        tenant: str,
        model: Model,
        served: str | None,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
    ) -> int:
        """The tokens of `messages` (with `tools`) as a prompt to `model` (its server's name
        for it: `served`), counted by the first of its servers that answers; for `tenant`,
        refused (429) while it has TOKEN_COUNTS_PER_TENANT counts asked already."""
        counting = self._counting.get(tenant, 0)
        if self._per_tenant and counting >= self._per_tenant:
            raise TooManyRequests(
                f"token_counts_in_flight: tenant {tenant!r} has {counting} token counts asked at once, at most"
                f" {self._per_tenant} (TOKEN_COUNTS_PER_TENANT); try again when one has been answered",
                retry_after=1,
            )
        self._counting[tenant] = counting + 1
        try:
            return await self._count(model, served, messages, tools)
        finally:
            left = self._counting[tenant] - 1
            if left:
                self._counting[tenant] = left
            else:
                del self._counting[tenant]

    async def _count(
        self, model: Model, served: str | None, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
    ) -> int:
        failures: list[str] = []
        not_served = 0
        for n, server in enumerate(model.servers, 1):
            # Named to the client by its place in the registry, never by its address.
            which = "its server" if len(model.servers) == 1 else f"its server {n} of {len(model.servers)}"
            try:
                return await self._count_on(model, server, which, served, messages, tools)
            except _NotServed:
                not_served += 1
            except _Unanswered as exc:
                failures.append(str(exc))
        if not_served == len(model.servers):
            raise NotServedByModelServer(
                f"model {model.name!r}: its server cannot count tokens (it serves no /tokenize; vLLM and llama.cpp do)"
            )
        raise ModelServerUnanswered(f"model {model.name!r}: the tokens were not counted ({'; '.join(failures)})")

    async def _count_on(
        self,
        model: Model,
        server: Server,
        which: str,
        served: str | None,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
    ) -> int:
        chat: dict[str, Any] = {"messages": messages, **({"tools": tools} if tools else {})}
        place = (model.name, server.name)
        if self._ways.get(place) == LLAMA_CPP:
            try:
                return await self._by_template(model, server, which, chat)
            except _NotServed:  # no longer llama.cpp (another server at its address): asked afresh
                del self._ways[place]
        answer = await self._post(model, server, which, "/tokenize", {
            **({"model": served} if served else {}), **chat, "add_generation_prompt": True
        })  # fmt: skip
        if isinstance(answer.get("count"), int):
            self._ways[place] = VLLM
            return int(answer["count"])
        if not isinstance(answer.get("tokens"), list):
            raise _Unanswered(f"{which} answered /tokenize with no count")
        # A list of tokens and no count: llama.cpp's, which read no `content` (and so none of the chat).
        count = await self._by_template(model, server, which, chat)
        self._ways[place] = LLAMA_CPP
        return count

    async def _by_template(self, model: Model, server: Server, which: str, chat: dict[str, Any]) -> int:
        """llama.cpp's way: the chat made its prompt by the server's template, then tokenized
        as the server tokenizes a chat's prompt (special tokens added, and parsed)."""
        prompt = (await self._post(model, server, which, "/apply-template", chat)).get("prompt")
        if not isinstance(prompt, str):
            raise _Unanswered(f"{which} answered /apply-template with no prompt")
        tokens = (await self._post(model, server, which, "/tokenize", {
            "content": prompt, "add_special": True, "parse_special": True
        })).get("tokens")  # fmt: skip
        if not isinstance(tokens, list):
            raise _Unanswered(f"{which} answered /tokenize with no tokens")
        return len(tokens)

    async def _post(self, model: Model, server: Server, which: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """`server`'s JSON answer to `body` at `path`; _NotServed, _Unanswered, ModelNotFound
        (its 404 naming a model), or ModelServerRefused (another 4xx: its message passed on)."""
        headers = {"Authorization": f"Bearer {server.api_key.get_secret_value()}"} if server.api_key else {}
        try:
            reply = await self._client.post(f"{server.url.rstrip('/')}{path}", json=body, headers=headers)
        except httpx.HTTPError as exc:
            # The exception's text may hold the address: the log has it, the client its kind.
            log.warning("model %s, server %s: %s %s: %s", model.name, server.name, path, type(exc).__name__, exc)
            raise _Unanswered(f"{which}: {type(exc).__name__}") from None
        message = _message(reply)
        if reply.status_code in NOT_SERVED and "model" not in message.lower():
            raise _NotServed
        if reply.status_code >= 500:
            log.warning("model %s, server %s: %s answered %d: %s", model.name, server.name, path, reply.status_code,
                        message)  # fmt: skip
            raise _Unanswered(f"{which}: {path} answered {reply.status_code}")
        if reply.status_code == 404:  # a model its server does not serve, as a response would be answered
            raise ModelNotFound(f"model {model.name!r}: {which}: {message[:MESSAGE_CHARS]}")
        if reply.status_code >= 400:
            raise ModelServerRefused(f"model {model.name!r}: {which} refused the count: {message[:MESSAGE_CHARS]}")
        try:
            answer = reply.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise _Unanswered(f"{which}: {path} answered something that is not a JSON object")
        return answer


def _message(reply: httpx.Response) -> str:
    """What a server's error answer says: OpenAI's ``error.message``, vLLM's ``message``,
    FastAPI's ``detail``, or its text."""
    try:
        body = reply.json()
    except ValueError:
        return reply.text.strip()
    if isinstance(body, dict):
        error = body.get("error")
        for said in (error.get("message") if isinstance(error, dict) else error, body.get("message"),
                     body.get("detail")):  # fmt: skip
            if isinstance(said, str):
                return said
    return reply.text.strip()
