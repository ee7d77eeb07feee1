"""A fake OpenAI-compatible model server whose latency and answers a test controls.

It records every request it receives and the most requests it held at once. It
answers "echo: <last message>" so each answer can be checked against its request.

Like vLLM and llama.cpp it also serves the rest of OpenAI's surface, in the same
echoing way: with `tools` (and the last message not a tool's answer) it calls a tool,
the first one or the one `tool_choice` names, with ``{"echo": <last message>}`` as
arguments (streamed in pieces); with `response_format` json_object or json_schema it
answers ``{"echo": <last message>}`` as JSON; with `logprobs` it gives a logprob per
word; `/v1/completions` answers each prompt of a list `n` times (with `echo`, the
prompt first), without a chat template. Like a reasoning model behind vLLM's reasoning
parser (or llama.cpp's), it reasons first ("thinking about: <last message>", streamed
as ``reasoning_content``) when ``chat_template_kwargs.enable_thinking`` is true, or when
`reasoning` is set and the request does not turn it off. An answer cut by a stop word
names it in its choice's ``stop_reason``, as vLLM does. Like vLLM and llama.cpp, it
serves Anthropic's ``/v1/messages`` too (whole, or as Anthropic's events), answering
as its chat completions would (`messages_asked` records those bodies).

It counts tokens (one a word, four more a message, as its usage counts a prompt) the way
vLLM or llama.cpp does (`tokenizer`): vLLM's ``POST /tokenize`` takes a chat's
``messages`` (or a ``prompt``) and answers ``{"count", "max_model_len", "tokens"}``;
llama.cpp's takes only ``content`` and answers ``{"tokens"}`` (``[]`` for a body without
it), a chat being made a prompt first by ``POST /apply-template``. With no `tokenizer`
it serves neither (as Ollama or TGI: 404).

Like a real server it may take only so many calls at once (`slots`: the others wait
their turn inside it), be broken (`broken`: every answer, `/health` included, is that
status), and answer faster when it saw a conversation's prefix a moment ago (`cached_latency`:
its prefix cache).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


@dataclass
class Failure:
    """An error answer the server gives instead of a completion."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


class FakeModelServer:
    """Serves ``/v1/chat/completions`` and ``/v1/models`` on 127.0.0.1 in a thread."""

    def __init__(self, port: int = 0) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.reset()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def reset(self) -> None:
        """Forget what was received and return to instant echo answers."""
        self.latency = 0.0
        self.models = ["fake-model"]
        self.strict_models = False  # like vLLM: 404 for a model it does not serve
        self.context_size: int | None = None  # like vLLM: 400 when prompt + max_tokens exceed it
        self.failures: list[Failure] = []  # answered in turn, before any completion
        self.chunk_delay = 0.0  # seconds between streamed chunks (the token rate)
        # A pause of `stall` seconds after `stall_after` streamed chunks (a long prefill,
        # a server busy with other requests): a client must close the connection to stop it.
        self.stall_after: int | None = None
        self.stall = 0.0
        self.stalling = 0  # streams paused right now
        self.disconnects_while_stalled = 0  # streams the client closed during their pause
        self.extra_words = 0  # words added to each answer, to make it long
        # Usage in its answers (a stream's when stream_options.include_usage asks): False
        # for a server that counts nothing, or ignores stream_options.
        self.sends_usage = True
        # Prompt tokens it says it read from its prefix cache, as vLLM with prefix caching
        # does (usage.prompt_tokens_details.cached_tokens), at most the prompt's; 0: it says nothing.
        self.cached_tokens = 0
        self.reasoning = False  # reasons unless a request's chat_template_kwargs.enable_thinking is false
        # How it counts tokens: "vllm", "llama.cpp", or None (it cannot: /tokenize is 404).
        self.tokenizer: str | None = "vllm"
        self.tokenized: list[dict[str, Any]] = []  # bodies of /tokenize and /apply-template, in turn
        self.tokenize_held = False  # /tokenize answers only once this is False again
        self.tokenizing = 0  # /tokenize calls being answered right now
        self.messages_asked: list[dict[str, Any]] = []  # bodies of /v1/messages, in turn
        self.completed_streams = 0
        self.disconnects = 0  # streams the client closed before the end
        self.requests: list[dict[str, Any]] = []
        self.probes = 0  # GET /health and /v1/models asked (probes, and lists of the models served)
        self.clients: set[tuple[str, int]] = set()  # (host, port) of each connection seen
        self.last_headers: dict[str, str] = {}  # of the last chat completion request
        self.in_flight = 0
        self.peak_in_flight = 0
        self.slots: int | None = None  # calls it works on at once; the others wait inside it
        self._slots: asyncio.Semaphore | None = None
        self.broken: int | None = None  # a status every request is answered with (a sick server)
        self.cached_latency: float | None = None  # the latency when the prompt's prefix is cached
        self.cache_seconds = 30.0  # how long a prefix stays cached
        self.cache_size: int | None = None  # prefixes it keeps at most (the least recently used go)
        self._cache: OrderedDict[str, float] = OrderedDict()
        self.prefix_hits = 0
        self.answered = 0  # chat completions answered in full
        self.busy_seconds = 0.0  # the time its calls took, in all (their speed as it delivered it)
        # /v1/embeddings: vectors of `embedding_dims` floats, the same for the same input;
        # a call costs `embed_fixed` + `embed_per_input` per input seconds, one call at a
        # time (as a GPU's batch is); the inputs each call carried, in turn.
        self.embedding_dims = 8
        self.embed_fixed = 0.0
        self.embed_per_input = 0.0
        # Like vLLM and TEI: a call with an input of more tokens (words) than this is
        # refused whole with 400, naming the input's length.
        self.embed_context: int | None = None
        self.embedding_calls: list[int] = []
        self._embedding_lock: asyncio.Lock | None = None

    @property
    def completions(self) -> list[dict[str, Any]]:
        """Bodies of the chat completion requests received."""
        return [r for r in self.requests if r.get("messages") is not None]

    @property
    def raw_completions(self) -> list[dict[str, Any]]:
        """Bodies of the (raw) completion requests received at /v1/completions."""
        return [r for r in self.requests if r.get("prompt") is not None]

    def start(self) -> FakeModelServer:
        app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/completions", self._chat, methods=["POST"]),
                Route("/v1/messages", self._messages, methods=["POST"]),
                Route("/v1/embeddings", self._embeddings, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/tokenize", self._tokenize, methods=["POST"]),
                Route("/apply-template", self._apply_template, methods=["POST"]),
                Route("/health", self._health, methods=["GET"]),
                Route("/stats", self._stats, methods=["GET", "DELETE"]),
                Route("/settings", self._settings, methods=["PUT"]),
            ]
        )
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True, name="fake-model-server")
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake model server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server:
            self._server.should_exit = True
        if self._thread:
            self._thread.join(timeout=10)

    async def _stats(self, request: Request) -> Response:
        """What a benchmark in another process reads: requests so far, most held at once.
        DELETE starts the count again."""
        stats = {"requests": len(self.requests), "peak_in_flight": self.peak_in_flight,
                 "answered": self.answered, "prefix_hits": self.prefix_hits,
                 "embedding_calls": len(self.embedding_calls),
                 "embedded_inputs": sum(self.embedding_calls)}  # fmt: skip
        if request.method == "DELETE":
            self.requests.clear()
            self.embedding_calls.clear()
            self.peak_in_flight = self.in_flight
            self.answered = self.prefix_hits = 0
        return JSONResponse(stats)

    async def _settings(self, request: Request) -> Response:
        """What a benchmark in another process changes between scenarios: the latency
        and the delay between streamed chunks."""
        settings = await request.json()
        self.latency = float(settings.get("latency", self.latency))
        self.chunk_delay = float(settings.get("chunk_delay", self.chunk_delay))
        if "broken" in settings:
            self.broken = settings["broken"]
        if "cached_latency" in settings:
            self.cached_latency = settings["cached_latency"]
        self.embed_fixed = float(settings.get("embed_fixed", self.embed_fixed))
        self.embed_per_input = float(settings.get("embed_per_input", self.embed_per_input))
        return JSONResponse({"latency": self.latency, "chunk_delay": self.chunk_delay, "broken": self.broken})

    async def _embeddings(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        if self.broken:
            return JSONResponse({"error": "broken"}, status_code=self.broken)
        if self.failures:
            failure = self.failures.pop(0)
            return JSONResponse(failure.body, status_code=failure.status, headers=failure.headers)
        if self.strict_models and body.get("model") not in self.models:
            message = f"The model `{body.get('model')}` does not exist."
            return JSONResponse({"error": {"message": message, "type": "NotFoundError", "code": 404}}, status_code=404)
        given = body.get("input")
        inputs = [given] if isinstance(given, str) or (given and isinstance(given[0], int)) else list(given or [])
        self.embedding_calls.append(len(inputs))
        counts = [len(item) if isinstance(item, list) else len(str(item).split()) for item in inputs]
        if self.embed_context is not None and max(counts, default=0) > self.embed_context:
            message = (f"This model's maximum context length is {self.embed_context} tokens. However, you requested"
                       f" {max(counts)} tokens in the input for embedding generation. Please reduce the length of"
                       " the input.")  # fmt: skip
            return _openai_error(400, message, "BadRequestError")
        if self._embedding_lock is None:
            self._embedding_lock = asyncio.Lock()
        async with self._embedding_lock:  # one call at a time, as a GPU's batch
            cost = self.embed_fixed + self.embed_per_input * len(inputs)
            if cost:
                await asyncio.sleep(cost)
        dims = int(body.get("dimensions") or self.embedding_dims)
        data = [
            {"object": "embedding", "index": n, "embedding": fake_vector(item, dims)} for n, item in enumerate(inputs)
        ]
        tokens = sum(counts)
        return JSONResponse({"object": "list", "data": data, "model": body.get("model") or self.models[0],
                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})  # fmt: skip

    async def _tokenize(self, request: Request) -> Response:
        body = await request.json()
        self.tokenized.append(body)
        self.tokenizing += 1
        try:
            # A tokenizer busy with other work, until the test's thread says (a flag, as
            # an asyncio.Event of this server's loop cannot be set from that thread).
            while self.tokenize_held:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        finally:
            self.tokenizing -= 1
        if self.tokenizer is None:
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        if self.broken:
            return _openai_error(self.broken, "the server is broken", "InternalServerError")
        if self.tokenizer == "llama.cpp":
            # Only `content` is read (a string, or tokens and strings mixed); anything else is
            # no content at all. Its model has no BOS token: add_special adds nothing.
            content = body.get("content")
            words = content.split() if isinstance(content, str) else []
            return JSONResponse({"tokens": [len(word) for word in words]})
        if self.strict_models and body.get("model") not in self.models:
            return _openai_error(404, f"The model `{body.get('model')}` does not exist.", "NotFoundError")
        if isinstance(body.get("messages"), list):
            count = _prompt_tokens(body["messages"])
        elif isinstance(body.get("prompt"), str):
            count = len(body["prompt"].split())
        else:
            return _openai_error(400, "1 validation error: messages or prompt: Field required", "BadRequestError")
        return JSONResponse({"count": count, "max_model_len": self.context_size or 4096, "tokens": list(range(count))})

    async def _apply_template(self, request: Request) -> Response:
        """llama.cpp's: a chat made the prompt its template makes (four tokens a message, and its words)."""
        body = await request.json()
        self.tokenized.append(body)
        if self.tokenizer != "llama.cpp":
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        if not isinstance(body.get("messages"), list):
            return _openai_error(400, "'messages' is required", "invalid_request_error")
        turns = [f"<|start|> {m.get('role')} <|sep|> {_text(m.get('content'))} <|end|>" for m in body["messages"]]
        return JSONResponse({"prompt": " ".join(turns)})

    async def _messages(self, request: Request) -> Response:
        """Anthropic's /v1/messages, answered as its chat completions answer the same (vLLM's
        and llama.cpp's translate it so too)."""
        body = await request.json()
        self.messages_asked.append(body)
        if self.broken:
            return JSONResponse({"type": "error", "error": {"type": "api_error", "message": "the server is broken"}},
                                status_code=self.broken)  # fmt: skip
        chat = _chat_of_message(body)
        chunks, usage = _surface_chunks(chat, self.models[0], True, self.thinks(chat))
        events = _message_events(chunks, usage or {})
        if body.get("stream"):
            text = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events)
            return Response(text, media_type="text/event-stream")
        message = {**events[0]["message"], "content": _message_content(events)}
        message.update(events[-2]["delta"], usage={**message["usage"], **events[-2]["usage"]})
        return JSONResponse(message)

    async def _health(self, _: Request) -> Response:
        self.probes += 1
        if self.broken:
            return JSONResponse({"error": "broken"}, status_code=self.broken)
        return JSONResponse({"status": "ok"})

    async def _models(self, _: Request) -> Response:
        self.probes += 1
        if self.broken:
            return JSONResponse({"error": "broken"}, status_code=self.broken)
        return JSONResponse(
            {
                "object": "list",
                "data": [{"id": m, "object": "model", "owned_by": "fake"} for m in self.models],
            }
        )

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        if request.client:
            self.clients.add((request.client.host, request.client.port))
        self.last_headers = dict(request.headers)
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        streaming = False
        try:
            if self.broken:
                return _openai_error(self.broken, "the server is broken", "InternalServerError")
            if self.slots:
                if self._slots is None:
                    self._slots = asyncio.Semaphore(self.slots)
                async with self._slots:
                    await self._work(body)
            else:
                await self._work(body)
            wider = ("prompt", "tools", "response_format", "logprobs")
            if any(body.get(name) not in (None, [], False) for name in wider) or self.thinks(body):
                answer = self._answer(body)  # errors, context checks: as for any request
                if isinstance(answer, Response):
                    return answer
                streaming = bool(body.get("stream"))
                try:
                    chunks, usage = _surface_chunks(body, self.models[0], self.sends_usage, self.thinks(body))
                except (KeyError, TypeError, AttributeError) as error:  # as vLLM refuses a malformed body
                    return JSONResponse({"object": "error", "message": f"bad request: {error!r}",
                                         "type": "BadRequestError", "code": 400}, status_code=400)  # fmt: skip
                if streaming:
                    return StreamingResponse(self._events(chunks), media_type="text/event-stream")
                return JSONResponse(_joined(chunks, usage))
            answer = self._answer(body)
            if isinstance(answer, Response):
                return answer
            streaming = bool(body.get("stream"))
            if streaming:
                return StreamingResponse(self._stream(body, *answer), media_type="text/event-stream")
            content, finish, usage, stopped_by = answer
            model = body.get("model") or self.models[0]
            return _whole(model, content, finish, usage if self.sends_usage else None, stopped_by)
        finally:
            if not streaming:
                self.in_flight -= 1

    def thinks(self, body: dict[str, Any]) -> bool:
        """Whether it reasons before it answers `body` (a chat's)."""
        if body.get("messages") is None:
            return False
        asked = (body.get("chat_template_kwargs") or {}).get("enable_thinking")
        return asked is True or (self.reasoning and asked is not False)

    async def _work(self, body: dict[str, Any]) -> None:
        """The time a call takes: `latency`, or `cached_latency` when its prefix is cached."""
        started = time.monotonic()
        latency = self.latency
        messages = body.get("messages")
        if self.cached_latency is not None and isinstance(messages, list) and len(messages) > 1:
            prefix = json.dumps(messages[:-1], sort_keys=True)
            now = time.monotonic()
            if now - self._cache.get(prefix, -1e9) < self.cache_seconds:
                latency = self.cached_latency
                self.prefix_hits += 1
            self._cache[prefix] = now
            self._cache.move_to_end(prefix)
            while self.cache_size is not None and len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        if latency:
            await asyncio.sleep(latency)
        self.answered += 1
        self.busy_seconds += time.monotonic() - started

    async def _stream(
        self, body: dict[str, Any], content: str, finish: str, usage: dict[str, Any], stopped_by: str | None
    ) -> Any:
        base = {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion.chunk",
            "model": body.get("model") or self.models[0],
        }
        words = content.split(" ")
        deltas = [{"role": "assistant"}] + [{"content": w if i == 0 else " " + w} for i, w in enumerate(words)]
        finished = False
        try:
            for sent, delta in enumerate(deltas, 1):
                yield _event({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
                if self.chunk_delay:
                    await asyncio.sleep(self.chunk_delay)
                if sent == self.stall_after:
                    await self._pause()
            yield _event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish,
                                               "stop_reason": stopped_by}]})  # fmt: skip
            if (body.get("stream_options") or {}).get("include_usage") and self.sends_usage:
                yield _event({**base, "choices": [], "usage": usage})
            yield "data: [DONE]\n\n"
            finished = True
        finally:
            self._stream_ended(finished)

    async def _events(self, chunks: list[dict[str, Any]]) -> Any:
        finished = False
        try:
            for chunk in chunks:
                yield _event(chunk)
                if self.chunk_delay:
                    await asyncio.sleep(self.chunk_delay)
            yield "data: [DONE]\n\n"
            finished = True
        finally:
            self._stream_ended(finished)

    def _stream_ended(self, finished: bool) -> None:
        """Count a stream that ended: sent to its end, or closed by the client before."""
        self.in_flight -= 1
        if finished:
            self.completed_streams += 1
        else:
            self.disconnects += 1

    async def _pause(self) -> None:
        self.stalling += 1
        try:
            await asyncio.sleep(self.stall)
        except asyncio.CancelledError:  # the client closed the connection
            self.disconnects_while_stalled += 1
            raise
        finally:
            self.stalling -= 1

    def _answer(self, body: dict[str, Any]) -> Response | tuple[str, str, dict[str, Any], str | None]:
        """An error response, or the (content, finish_reason, usage, the stop word that
        ended it) to send."""
        if self.failures:
            failure = self.failures.pop(0)
            return JSONResponse(failure.body, failure.status, headers=failure.headers)
        model = body.get("model")
        if self.strict_models and model not in self.models:
            return _openai_error(404, f"The model `{model}` does not exist.", "NotFoundError")
        if body.get("prompt") is not None:
            return "", "stop", {}, None
        prompt = _text(body["messages"][-1]["content"])
        prompt_tokens = _prompt_tokens(body["messages"])
        max_tokens = body.get("max_tokens")
        if self.context_size is not None and max_tokens is not None and prompt_tokens + max_tokens > self.context_size:
            return _openai_error(
                400,
                f"'max_tokens' or 'max_completion_tokens' is too large: {max_tokens}. This model's maximum"
                f" context length is {self.context_size} tokens and your request has {prompt_tokens} input"
                f" tokens ({max_tokens} > {self.context_size} - {prompt_tokens}).",
                "BadRequestError",
            )
        content = f"echo: {prompt}"
        finish = "stop"
        stopped_by = None
        for word in body.get("stop") or []:
            if word in content:
                content, stopped_by = content[: content.index(word)], word
        if max_tokens is not None and len(content.split()) > max_tokens:
            content = " ".join(content.split()[:max_tokens])
            finish = "length"
        if self.extra_words:
            content += " " + " ".join(f"word{i}" for i in range(self.extra_words))
        completion_tokens = len(content.split())
        usage: dict[str, Any] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        if self.cached_tokens:
            usage["prompt_tokens_details"] = {"cached_tokens": min(self.cached_tokens, prompt_tokens)}
        return content, finish, usage, stopped_by if finish == "stop" else None


def _text(content: Any) -> str:
    """A message's text: its content, or its content parts' text joined."""
    if isinstance(content, list):
        return " ".join(part["text"] for part in content if isinstance(part, dict) and part.get("text"))
    return content if isinstance(content, str) else ""


def _prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """A chat's tokens, as the fake counts them: a word each, four more a message."""
    return sum(len(_text(m.get("content")).split()) + 4 for m in messages)


def _logprobs_of(words: list[str]) -> list[dict[str, Any]]:
    return [
        {"token": word, "logprob": -0.25, "bytes": list(word.encode()),
         "top_logprobs": [{"token": word, "logprob": -0.25, "bytes": list(word.encode())}]}
        for word in words
    ]  # fmt: skip


def _surface_chunks(
    body: dict[str, Any], default_model: str, sends_usage: bool = True, thinks: bool = False
) -> tuple[list[dict[str, Any]], dict[str, int] | None]:
    """The answer to a request using OpenAI's wider surface, as the chunks a stream
    sends (joined by `_joined` for a whole answer)."""
    model = body.get("model") or default_model
    n = int(body.get("n") or 1)
    raw = body.get("prompt") is not None
    base = {"id": "cmpl-fake" if raw else "chatcmpl-fake", "created": int(time.time()), "model": model}
    base["object"] = "text_completion" if raw else "chat.completion.chunk"
    chunks: list[dict[str, Any]] = []
    completion_tokens = 0
    if raw:
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        for p, prompt in enumerate(prompts):
            for j in range(n):
                index = p * n + j
                words = [*(prompt.split() if body.get("echo") else []), "echo:", *prompt.split()]
                finish = "stop"
                if body.get("max_tokens") is not None and len(words) > int(body["max_tokens"]):
                    words, finish = words[: int(body["max_tokens"])], "length"
                completion_tokens += len(words)
                for i, word in enumerate(words):
                    piece = word if i == 0 else f" {word}"
                    logprobs = None
                    if body.get("logprobs") is not None:
                        logprobs = {"tokens": [piece], "token_logprobs": [-0.25], "top_logprobs": [{piece: -0.25}],
                                    "text_offset": [len(" ".join(words[:i])) + (1 if i else 0)]}  # fmt: skip
                    choice = {"index": index, "text": piece, "finish_reason": None, "logprobs": logprobs}
                    chunks.append({**base, "choices": [choice]})
                chunks.append({**base, "choices": [{"index": index, "text": "", "finish_reason": finish,
                                                    "logprobs": None}]})  # fmt: skip
        prompt_tokens = sum(len(prompt.split()) for prompt in prompts)
    else:
        last = body["messages"][-1]
        prompt = _text(last.get("content"))
        tools = body.get("tools") or []
        choice_of = body.get("tool_choice")
        calling = bool(tools) and last.get("role") != "tool" and choice_of != "none"
        for index in range(n):
            chunks.append({**base, "choices": [{"index": index, "delta": {"role": "assistant", "content": ""},
                                                "finish_reason": None}]})  # fmt: skip
            if thinks:
                thought = f"thinking about: {prompt}".split(" ")
                completion_tokens += len(thought)
                for i, word in enumerate(thought):
                    delta = {"reasoning_content": word if i == 0 else f" {word}"}
                    chunks.append({**base, "choices": [{"index": index, "delta": delta, "finish_reason": None}]})
            if calling:
                named = choice_of.get("function", {}).get("name") if isinstance(choice_of, dict) else None
                name = named or tools[0]["function"]["name"]
                arguments = json.dumps({"echo": prompt})
                thirds = [arguments[: len(arguments) // 3], arguments[len(arguments) // 3 : 2 * len(arguments) // 3],
                          arguments[2 * len(arguments) // 3 :]]  # fmt: skip
                first = {"index": 0, "id": f"call_{index}", "type": "function",
                         "function": {"name": name, "arguments": ""}}  # fmt: skip
                pieces = [first, *({"index": 0, "function": {"arguments": part}} for part in thirds)]
                for call in pieces:
                    delta = {"tool_calls": [call]}
                    chunks.append({**base, "choices": [{"index": index, "delta": delta, "finish_reason": None}]})
                finish = "tool_calls"
                completion_tokens += 10
            else:
                form = (body.get("response_format") or {}).get("type")
                content = json.dumps({"echo": prompt}) if form in ("json_object", "json_schema") else f"echo: {prompt}"
                words = content.split(" ")
                if body.get("max_tokens") is not None and len(words) > int(body["max_tokens"]):
                    words, finish = words[: int(body["max_tokens"])], "length"
                else:
                    finish = "stop"
                completion_tokens += len(words)
                for i, word in enumerate(words):
                    piece = word if i == 0 else f" {word}"
                    choice: dict[str, Any] = {"index": index, "delta": {"content": piece}, "finish_reason": None}
                    if body.get("logprobs"):
                        choice["logprobs"] = {"content": _logprobs_of([piece]), "refusal": None}
                    chunks.append({**base, "choices": [choice]})
            chunks.append({**base, "choices": [{"index": index, "delta": {}, "finish_reason": finish}]})
        prompt_tokens = _prompt_tokens(body["messages"])
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
             "total_tokens": prompt_tokens + completion_tokens}  # fmt: skip
    if not sends_usage:
        return chunks, None
    if (body.get("stream_options") or {}).get("include_usage"):
        chunks.append({**base, "choices": [], "usage": usage})
    return chunks, usage


def _chat_of_message(body: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic message request as the chat request the fake answers the same way."""
    messages = []
    for message in body.get("messages") or []:
        content = message.get("content")
        blocks = content if isinstance(content, list) else [{"type": "text", "text": content}]
        results = [b for b in blocks if b.get("type") == "tool_result"]
        if results:
            messages.append({"role": "tool", "content": _text(results[-1].get("content"))})
        else:
            messages.append({"role": message.get("role"), "content": _text(blocks)})
    choice = body.get("tool_choice") or {}
    tool_choice = {"type": "function", "function": {"name": choice.get("name")}} if choice.get("type") == "tool" \
        else "none" if choice.get("type") == "none" else None  # fmt: skip
    thinking = (body.get("thinking") or {}).get("type")
    return {
        "messages": messages,
        "max_tokens": body.get("max_tokens"),
        "tools": [{"type": "function", "function": {"name": t["name"]}} for t in body.get("tools") or []],
        "tool_choice": tool_choice,
        "stream_options": {"include_usage": True},
        **({"chat_template_kwargs": {"enable_thinking": thinking != "disabled"}} if thinking else {}),
    }


def _message_events(chunks: list[dict[str, Any]], usage: dict[str, Any]) -> list[dict[str, Any]]:
    """A chat answer's chunks (choice 0) as Anthropic's stream events."""
    start = {"id": "msg_fake", "type": "message", "role": "assistant", "model": chunks[0]["model"], "content": [],
             "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": usage.get("prompt_tokens", 0),
                                                                   "output_tokens": 0}}  # fmt: skip
    events: list[dict[str, Any]] = [{"type": "message_start", "message": start}, {"type": "ping"}]
    open_kind, blocks, finish = None, -1, "stop"
    for chunk in chunks:
        for piece in chunk["choices"]:
            delta = piece.get("delta") or {}
            finish = piece.get("finish_reason") or finish
            for kind, said in (("thinking", delta.get("reasoning_content")), ("text", delta.get("content"))):
                if not said:
                    continue
                if open_kind != kind:
                    if open_kind is not None:
                        events.append({"type": "content_block_stop", "index": blocks})
                    blocks, open_kind = blocks + 1, kind
                    block = {"type": kind, kind: "", **({"signature": ""} if kind == "thinking" else {})}
                    events.append({"type": "content_block_start", "index": blocks, "content_block": block})
                events.append({"type": "content_block_delta", "index": blocks,
                               "delta": {"type": f"{kind}_delta", kind: said}})  # fmt: skip
            for call in delta.get("tool_calls") or []:
                if call.get("id"):
                    if open_kind is not None:
                        events.append({"type": "content_block_stop", "index": blocks})
                    blocks, open_kind = blocks + 1, "tool_use"
                    block = {"type": "tool_use", "id": call["id"], "name": call["function"]["name"], "input": {}}
                    events.append({"type": "content_block_start", "index": blocks, "content_block": block})
                if call.get("function", {}).get("arguments"):
                    events.append({"type": "content_block_delta", "index": blocks, "delta": {
                        "type": "input_json_delta", "partial_json": call["function"]["arguments"]}})  # fmt: skip
    if open_kind is not None:
        events.append({"type": "content_block_stop", "index": blocks})
    reason = {"length": "max_tokens", "tool_calls": "tool_use"}.get(finish, "end_turn")
    return [*events, {"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": None},
                      "usage": {"output_tokens": usage.get("completion_tokens", 0)}},
            {"type": "message_stop"}]  # fmt: skip


def _message_content(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The content blocks Anthropic's events make."""
    blocks: list[dict[str, Any]] = []
    for event in events:
        if event["type"] == "content_block_start":
            blocks.append(dict(event["content_block"]))
        elif event["type"] == "content_block_delta":
            delta, block = event["delta"], blocks[-1]
            if delta["type"] == "input_json_delta":
                block["partial"] = block.get("partial", "") + delta["partial_json"]
            else:
                kind = delta["type"].removesuffix("_delta")
                block[kind] += delta[kind]
    for block in blocks:
        if "partial" in block:
            block["input"] = json.loads(block.pop("partial"))
    return blocks


def _joined(chunks: list[dict[str, Any]], usage: dict[str, int] | None) -> dict[str, Any]:
    """A whole answer made of a stream's chunks, as a server sends it without "stream"."""
    raw = chunks[0]["object"] == "text_completion"
    choices: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for piece in chunk["choices"]:
            whole = choices.setdefault(piece["index"], {"index": piece["index"], "content": "", "calls": {},
                                                        "finish_reason": None, "logprobs": None,
                                                        "reasoning": ""})  # fmt: skip
            delta = piece.get("delta") or {}
            whole["content"] += (piece.get("text") if raw else delta.get("content")) or ""
            whole["reasoning"] += delta.get("reasoning_content") or ""
            for call in delta.get("tool_calls") or []:
                at = whole["calls"].setdefault(call["index"], {"id": "", "type": "function",
                                                               "function": {"name": "", "arguments": ""}})  # fmt: skip
                at["id"] = call.get("id") or at["id"]
                at["function"]["name"] = call.get("function", {}).get("name") or at["function"]["name"]
                at["function"]["arguments"] += call.get("function", {}).get("arguments") or ""
            if piece.get("logprobs"):
                joined = whole["logprobs"] = whole["logprobs"] or {}
                for key, value in piece["logprobs"].items():
                    if isinstance(value, list):
                        joined.setdefault(key, []).extend(value)
                    else:
                        joined.setdefault(key, value)
            whole["finish_reason"] = piece.get("finish_reason") or whole["finish_reason"]
    out = []
    for index in sorted(choices):
        c = choices[index]
        if raw:
            out.append({"index": index, "text": c["content"], "finish_reason": c["finish_reason"],
                        "logprobs": c["logprobs"]})  # fmt: skip
            continue
        message: dict[str, Any] = {"role": "assistant", "content": c["content"] or None}
        if c["calls"]:
            message["tool_calls"] = [c["calls"][k] for k in sorted(c["calls"])]
        if c["reasoning"]:
            message["reasoning_content"] = c["reasoning"]
        out.append({"index": index, "message": message, "finish_reason": c["finish_reason"], "logprobs": c["logprobs"]})
    kind = "text_completion" if raw else "chat.completion"
    return {"id": chunks[0]["id"], "object": kind, "created": chunks[0]["created"], "model": chunks[0]["model"],
            "choices": out, "usage": usage}  # fmt: skip


def _event(chunk: dict[str, Any]) -> str:
    return f"data: {json.dumps(chunk)}\n\n"


def _whole(
    model: str, content: str, finish: str, usage: dict[str, Any] | None, stopped_by: str | None = None
) -> Response:
    message = {"role": "assistant", "content": content}
    return JSONResponse(
        {
            "id": "chatcmpl-whole",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "stop_reason": stopped_by}],
            "usage": usage,
        }
    )


def _openai_error(status: int, message: str, kind: str) -> Response:
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": status}}, status)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fake_vector(item: Any, dims: int) -> list[float]:
    """The fake's embedding of a text or a list of token ids: the same for the same
    input, of length 1, different for different inputs."""
    seed = hashlib.sha256(json.dumps(item).encode()).digest()
    raw = [(seed[n % 32] + 31 * (n // 32)) % 256 / 127.5 - 1.0 for n in range(dims)]
    norm = sum(x * x for x in raw) ** 0.5 or 1.0
    return [x / norm for x in raw]


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8670)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between streamed chunks")
    parser.add_argument("--slots", type=int, default=None, help="calls it works on at once")
    parser.add_argument("--cached-latency", type=float, default=None, help="latency when the prefix is cached")
    parser.add_argument("--cache-size", type=int, default=None, help="prefixes it keeps cached at most")
    parser.add_argument("--embed-fixed", type=float, default=0.0, help="seconds an embeddings call costs")
    parser.add_argument("--embed-per-input", type=float, default=0.0, help="and seconds per input of it")
    args = parser.parse_args()
    server = FakeModelServer(args.port)
    server.latency = args.latency
    server.chunk_delay = args.chunk_delay
    server.slots = args.slots
    server.cached_latency = args.cached_latency
    server.cache_size = args.cache_size
    server.embed_fixed = args.embed_fixed
    server.embed_per_input = args.embed_per_input
    server.start()
    print(f"fake model server on {server.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()
