"""Client of an OpenAI-compatible model server (vLLM, llama.cpp, Ollama, TGI).

One `ModelClient` per worker process and model server, shared by the process's
threads; each thread keeps its own keep-alive connection (`tasks/model_http.py`).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from shared.config import Config
from shared.contract import (
    DEFAULT_PRIORITY,
    ModelServerError,
    ModelServerFailed,
    ModelServerRejected,
    ModelServerTimeout,
    ModelServerUnavailable,
)
from shared.telemetry import tracing
from tasks.model_http import ConnectTimeout, HttpTransport, Reply, Transport

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
# Called with each piece of a streamed answer: choice index, text, and what else the
# piece brought (tool-call pieces, logprobs) or None.
OnDelta = Callable[[int, str, "dict[str, Any] | None"], None]
MAX_RETRY_AFTER = 60.0


class Cancelled(Exception):
    """The job was cancelled: the model call was stopped and its connection closed."""


class Cancel:
    """Stops a model call from another thread: the call sees it between chunks, and
    its connection is closed at once, so the model server stops generating."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._reply: Reply | None = None

    def set(self) -> None:
        with self._lock:
            self._event.set()
            reply = self._reply
        if reply is not None:
            reply.abort()

    def is_set(self) -> bool:
        return self._event.is_set()

    def attach(self, reply: Reply | None) -> None:
        with self._lock:
            self._reply = reply
        if reply is not None and self._event.is_set():
            reply.abort()


class _Retryable(Exception):
    def __init__(self, error: ModelServerError, retry_after: float | None = None) -> None:
        self.error = error
        self.retry_after = retry_after


@dataclass
class Completion:
    """What a chat completion produced: every choice (more than one with ``n``)."""

    choices: list[dict[str, Any]]  # index, content, finish_reason; tool_calls, logprobs when given
    model: str | None
    usage: dict[str, Any] | None
    # When (time.monotonic()) the first piece of the answer arrived: its time to first token.
    first_piece_at: float | None = None

    @property
    def content(self) -> str:
        return str(self.choices[0]["content"]) if self.choices else ""

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form, as tasks return it: choice 0 first-class, as the spec's endpoints use it."""
        return {
            "content": self.content,
            "model": self.model,
            "finish_reason": self.choices[0]["finish_reason"] if self.choices else None,
            "usage": self.usage,
            "choices": self.choices,
        }


@dataclass
class ChatRequest:
    """One chat completion to ask for, in the spec's terms."""

    messages: list[dict[str, str]]
    temperature: float = 0.2
    tokens_limit: int | None = 8096
    stop_words: list[str] = field(default_factory=list)
    model: str | None = None
    sampling: dict[str, Any] = field(default_factory=dict)  # top_p, seed, n, penalties: passed as given
    # An OpenAI request's other fields (tools, response_format, logprobs, prompt, ...):
    # passed as given, never over what the gateway sets itself (model, stream).
    extra: dict[str, Any] = field(default_factory=dict)
    raw: bool = False  # a raw completion (/v1/completions, `extra["prompt"]`), not a chat
    priority: int | None = None  # the job's: 0 (batch) .. 9 (most urgent); None: the default


def server_priority(priority: int | None) -> int:
    """vLLM's `priority` for a job's: vLLM serves lower numbers first (its default is 0),
    the gateway higher ones (0 batch .. 9 most urgent), so 9 is 0 there and 0 is 9."""
    return 9 - (DEFAULT_PRIORITY if priority is None else max(0, min(9, priority)))


# What the gateway sets in every request to the model server itself.
OWN_FIELDS = frozenset({"model", "stream", "stream_options", "messages"})


# How servers say that prompt + max_tokens exceed the context window.
#   vLLM (old):  "This model's maximum context length is 2048 tokens. However, you requested
#                 8200 tokens (104 in the messages, 8096 in the completion)."
#   vLLM (new):  "... maximum context length is 2048 tokens and your request has 104 input tokens"
#   TGI:         "`inputs` tokens + `max_new_tokens` must be <= 2048. Given: 104 `inputs` tokens ..."
_CONTEXT_ERROR = re.compile(
    r"maximum context length|context length|context window|max_total_tokens"
    r"|`max_new_tokens` must be|max_tokens.{0,40}too large",
    re.IGNORECASE,
)
_CONTEXT_SIZE = re.compile(r"(?:maximum context length is|must be <=)\s*(\d+)", re.IGNORECASE)
_INPUT_TOKENS = re.compile(
    r"(\d+) in the messages|has (\d+) input tokens|Given: (\d+) `inputs` tokens|(\d+) input tokens",
    re.IGNORECASE,
)
_UNKNOWN_MODEL = re.compile(r"model.{0,80}(does not exist|not found|not exist|unknown)", re.IGNORECASE)


def fitted_max_tokens(message: str) -> int | None:
    """From a context-overflow error, the largest max_tokens that fits, if the message tells."""
    size = _CONTEXT_SIZE.search(message)
    used = _INPUT_TOKENS.search(message)
    if not size or not used:
        return None
    room = int(size.group(1)) - int(next(g for g in used.groups() if g))
    return room if room > 0 else None


class ModelClient:
    """Calls ``/v1/chat/completions`` with bounded retries of transient errors."""

    def __init__(
        self,
        config: Config,
        transport: Transport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        url = urlsplit(config.inner_llm_url)
        if config.inner_llm_api_key:
            headers["Authorization"] = f"Bearer {config.inner_llm_api_key.get_secret_value()}"
        elif url.username is not None:
            user = f"{unquote(url.username)}:{unquote(url.password or '')}"
            headers["Authorization"] = "Basic " + base64.b64encode(user.encode()).decode()
        # http.client on a keep-alive connection per thread: a fraction of httpx's CPU per
        # call, which was a large part of the worker's (figures: docs/benchmark.md).
        self._transport = transport or HttpTransport(config.inner_llm_url, headers)
        self._url = config.inner_llm_url_shown
        self._default_model = config.default_model or None
        self._priority_scheduling = config.inner_llm_priority_scheduling
        self._max_retries = config.llm_max_retries
        self._backoff = config.llm_retry_backoff
        self._deadline = config.llm_deadline
        self._timeout = config.llm_timeout
        self._connect_timeout = config.llm_connect_timeout
        self._sleep = sleep
        self._clock = clock
        self._served: list[str] | None = None
        self._served_lock = threading.Lock()

    def close(self) -> None:
        """Close every thread's connection."""
        self._transport.close()

    def chat(self, request: ChatRequest, cancel: Cancel | None = None, on_delta: OnDelta | None = None) -> Completion:
        """Ask for one chat completion and return its first choice.

        The answer is streamed, so that `cancel` can stop the call and the model server
        sees its connection close (and stops generating) at once. `on_delta(index, text, extra)`
        receives each piece of the answer as it arrives.
        """
        body: dict[str, Any] = {k: v for k, v in request.extra.items() if k not in OWN_FIELDS}
        if not request.raw:
            body["messages"] = request.messages
        body.update(temperature=request.temperature, stream=True, stream_options={"include_usage": True})
        model = request.model or self._default_model or self._first_served_model()
        if model:
            body["model"] = model
        if request.tokens_limit is not None:
            body["max_tokens"] = request.tokens_limit
        stop = [word for word in request.stop_words if word]
        if stop:
            body["stop"] = stop
        body.update(request.sampling)
        if self._priority_scheduling:
            body["priority"] = server_priority(request.priority)
        path = "/v1/completions" if request.raw else "/v1/chat/completions"
        try:
            return self._send(path, body, cancel, on_delta)
        except ModelServerRejected as exc:
            fitted = self._fit_to_context(exc, body)
            if fitted is None:
                raise self._explain_rejection(exc, model) from None
            return self._send(path, fitted, cancel, on_delta)

    def served_models(self) -> list[str]:
        """The model ids the server lists at ``/v1/models`` (empty if it lists none)."""
        data = self._send("/v1/models", None)
        items = data.get("data") if isinstance(data, dict) else None
        return [str(item["id"]) for item in items or [] if isinstance(item, dict) and "id" in item]

    def _first_served_model(self) -> str | None:
        # vLLM needs a model name; with none configured, use the first the server serves.
        with self._served_lock:
            if self._served is None:
                try:
                    self._served = self.served_models()
                except ModelServerError as exc:
                    log.warning("could not list the model server's models: %s", exc)
                    return None
            return self._served[0] if self._served else None

    def _fit_to_context(self, exc: ModelServerRejected, body: dict[str, Any]) -> dict[str, Any] | None:
        # The spec's default tokens_limit (8096) exceeds many models' context: rather than
        # refuse, ask again for what fits (or, if the server does not say, for its default,
        # which is "the rest of the context" on vLLM, TGI and llama.cpp).
        if "max_tokens" not in body or not _CONTEXT_ERROR.search(exc.message):
            return None
        fitted = dict(body)
        room = fitted_max_tokens(exc.message)
        if room is not None and room < body["max_tokens"]:
            fitted["max_tokens"] = room
        else:
            del fitted["max_tokens"]
        log.info(
            "max_tokens %s exceeds the model's context; asking for %s",
            body["max_tokens"],
            fitted.get("max_tokens", "the server default"),
        )
        return fitted

    def _explain_rejection(self, exc: ModelServerRejected, model: str | None) -> ModelServerRejected:
        if exc.status_code != 404 and not _UNKNOWN_MODEL.search(exc.message):
            return exc
        try:
            served = self.served_models()
        except ModelServerError:
            return exc
        if not served or model in served:
            return exc
        return ModelServerRejected(
            f"{exc.message} (model {model!r} is not served; the model server serves: {', '.join(served)})",
            exc.status_code,
        )

    def _send(
        self,
        path: str,
        body: dict[str, Any] | None,
        cancel: Cancel | None = None,
        on_delta: OnDelta | None = None,
    ) -> Any:
        attempt = 0
        relayed = False
        started = self._clock()
        give_up_at = started + self._deadline

        def relay(index: int, text: str, extra: dict[str, Any] | None) -> None:
            nonlocal relayed
            relayed = True
            assert on_delta is not None
            on_delta(index, text, extra)

        while True:
            if cancel is not None and cancel.is_set():
                raise Cancelled
            try:
                if body is None:
                    return self._get_json(path, give_up_at)
                return self._stream_completion(path, body, cancel, relay if on_delta else None, give_up_at)
            except _Retryable as retry:
                delay = self._delay(attempt, retry.retry_after)
                # Once pieces of the answer were passed on, a retry would send them twice.
                last = attempt >= self._max_retries or self._clock() + delay >= give_up_at
                if last or relayed or (cancel is not None and cancel.is_set()):
                    error = retry.error
                    spent = self._clock() - started
                    raise type(error)(
                        f"{error.message} (gave up after {attempt + 1} attempt{'s' if attempt else ''}"
                        f" in {spent:.1f}s)",
                        error.status_code,
                    ) from None
                log.warning("model server attempt %d failed (%s); retrying in %.2fs", attempt + 1, retry.error, delay)
                self._sleep(delay)
                attempt += 1

    def _timeouts(self, give_up_at: float) -> tuple[float, float]:
        """This attempt's read and connect timeouts: the configured ones, cut to what the deadline leaves."""
        left = max(0.001, give_up_at - self._clock())
        return min(self._timeout, left), min(self._connect_timeout, left)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, MAX_RETRY_AFTER)
        # Exponential backoff with full jitter, so retries of many jobs do not arrive together.
        return random.uniform(0, self._backoff * 2**attempt)

    def _get_json(self, path: str, give_up_at: float) -> Any:
        timeout, connect_timeout = self._timeouts(give_up_at)
        with self._transport_errors():
            reply = self._transport.send("GET", path, None, timeout, connect_timeout)
            try:
                self._check_status(reply)
                return _json_or_retry(reply)
            finally:
                reply.close()

    def _stream_completion(
        self,
        path: str,
        body: dict[str, Any],
        cancel: Cancel | None,
        on_delta: OnDelta | None,
        give_up_at: float,
    ) -> Completion:
        timeout, connect_timeout = self._timeouts(give_up_at)
        data = json.dumps(body).encode()
        try:
            # Each attempt a span, its context sent on: the model server's own spans join the trace.
            traced = self._span_attributes(body) if tracing.enabled() else None
            with self._transport_errors(), tracing.span(f"POST {path}", tracing.CLIENT, traced):
                reply = self._transport.send("POST", path, data, timeout, connect_timeout, tracing.inject())
                try:
                    if cancel is not None:
                        cancel.attach(reply)
                    self._check_status(reply)
                    if "text/event-stream" not in reply.header("content-type"):
                        # A server that ignores "stream" answers in one piece.
                        return _parse_completion(_json_or_retry(reply))
                    completion = _read_events(reply, cancel, on_delta, lambda: self._clock() >= give_up_at)
                    if completion.first_piece_at is not None:
                        tracing.event("first token", completion.first_piece_at)
                    return completion
                finally:
                    reply.close()
        except (_Retryable, ModelServerError, RuntimeError, ValueError, OSError):
            # A connection closed by Cancel.set() fails in whichever way the read was at.
            if cancel is not None and cancel.is_set():
                raise Cancelled from None
            raise
        finally:
            if cancel is not None:
                cancel.attach(None)

    def _span_attributes(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"server.address": self._url, "gen_ai.request.model": str(body.get("model") or ""),
                "gen_ai.request.max_tokens": int(body.get("max_tokens") or 0)}  # fmt: skip

    @contextlib.contextmanager
    def _transport_errors(self) -> Iterator[None]:
        try:
            yield
        except TimeoutError as exc:
            kind = "connect to" if isinstance(exc, ConnectTimeout) else "get an answer from"
            raise _Retryable(
                ModelServerTimeout(f"timed out trying to {kind} the model server at {self._url}")
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            reason = str(exc) or type(exc).__name__
            raise _Retryable(ModelServerUnavailable(f"model server unreachable at {self._url}: {reason}")) from None

    def _check_status(self, reply: Reply) -> None:
        if reply.status < 400:
            return
        detail = _error_message(reply)
        message = f"model server answered {reply.status}: {detail}"
        if reply.status in RETRYABLE_STATUS:
            raise _Retryable(ModelServerFailed(message, reply.status), _retry_after(reply))
        if reply.status in (401, 403):
            # The worker's own credentials are wrong: the caller's request is not at fault.
            raise ModelServerFailed(message, reply.status)
        raise ModelServerRejected(detail, reply.status)


def _json_or_retry(reply: Reply) -> Any:
    try:
        return json.loads(reply.read())
    except ValueError:
        raise _Retryable(ModelServerFailed("model server sent an answer that is not JSON")) from None


def _read_events(
    reply: Reply,
    cancel: Cancel | None,
    on_delta: OnDelta | None = None,
    past_deadline: Callable[[], bool] = lambda: False,
) -> Completion:
    """Join the server-sent chunks of a streamed completion, per choice: the text, the
    tool calls (their arguments arrive in pieces) and the logprobs."""
    choices: dict[int, _Choice] = {}
    model = None
    usage = None
    done = False
    first_piece_at = None
    for raw in reply.lines():
        if cancel is not None and cancel.is_set():
            raise Cancelled
        if past_deadline():
            raise ModelServerTimeout("the model server's answer took longer than LLM_DEADLINE allows")
        # After [DONE] the body is still read to its end: closing a reply with unread
        # body closes its connection, and the next job would pay for a new one.
        if done or not raw.startswith(b"data:"):
            continue
        data = raw[5:].strip()
        if data == b"[DONE]":
            done = True
            continue
        try:
            chunk = json.loads(data)
        except ValueError:
            raise _Retryable(ModelServerFailed("model server sent a chunk that is not JSON")) from None
        if not isinstance(chunk, dict):
            continue  # llama.cpp opens a stream of several prompts with "data: null"
        if "error" in chunk:
            error = chunk["error"]
            message = error.get("message") if isinstance(error, dict) else str(error)
            raise _Retryable(ModelServerFailed(f"model server failed mid-answer: {message}"))
        model = chunk.get("model") or model
        usage = chunk.get("usage") or usage
        for piece in chunk.get("choices") or []:
            index = int(piece.get("index", 0))
            choice = choices.get(index)
            if choice is None:
                choice = choices[index] = _Choice(index)
            text, extra = choice.add(piece)
            if text or extra:
                if first_piece_at is None:
                    first_piece_at = time.monotonic()
                if on_delta is not None:
                    on_delta(index, text, extra)
    joined = [choices[index].as_dict() for index in sorted(choices)]
    return Completion(
        choices=joined or [{"index": 0, "content": "", "finish_reason": None}],
        model=model,
        usage=usage,
        first_piece_at=first_piece_at,
    )


class _Choice:
    """One choice of a streamed answer, as its pieces arrive."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.parts: list[str] = []
        self.finish_reason: str | None = None
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.logprobs: dict[str, Any] | None = None

    def add(self, piece: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
        """Take one chunk's piece of this choice; return its text and what else it
        brought (tool-call pieces, logprobs), as a streaming client gets them."""
        delta = piece.get("delta") or {}
        text = delta.get("content") if "delta" in piece else piece.get("text")
        text = text if isinstance(text, str) else ""
        if text:
            self.parts.append(text)
        self.finish_reason = piece.get("finish_reason") or self.finish_reason
        extra: dict[str, Any] = {}
        calls = delta.get("tool_calls")
        if isinstance(calls, list) and calls:
            extra["tool_calls"] = calls
            for call in calls:
                self._add_call(call)
        logprobs = piece.get("logprobs")
        if isinstance(logprobs, dict) and logprobs:
            extra["logprobs"] = logprobs
            self._add_logprobs(logprobs)
        return text, extra or None

    def _add_call(self, call: dict[str, Any]) -> None:
        at = int(call.get("index", len(self.tool_calls)))
        blank = {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
        whole = self.tool_calls.setdefault(at, blank)
        if call.get("id"):
            whole["id"] = call["id"]
        if call.get("type"):
            whole["type"] = call["type"]
        function = call.get("function") or {}
        if function.get("name"):
            whole["function"]["name"] = function["name"]
        if isinstance(function.get("arguments"), str):
            whole["function"]["arguments"] += function["arguments"]

    def _add_logprobs(self, logprobs: dict[str, Any]) -> None:
        # Chat: {"content": [...], "refusal": [...]}; completions: parallel lists.
        if self.logprobs is None:
            self.logprobs = {}
        for key, value in logprobs.items():
            if isinstance(value, list):
                self.logprobs.setdefault(key, []).extend(value)
            elif key not in self.logprobs:
                self.logprobs[key] = value

    def as_dict(self) -> dict[str, Any]:
        whole: dict[str, Any] = {"index": self.index, "content": "".join(self.parts)}
        whole["finish_reason"] = self.finish_reason
        if self.tool_calls:
            whole["tool_calls"] = [self.tool_calls[at] for at in sorted(self.tool_calls)]
        if self.logprobs is not None:
            whole["logprobs"] = self.logprobs
        return whole


def _error_message(reply: Reply) -> str:
    """The error text of an OpenAI-style (or TGI, Ollama, plain text) error answer."""
    body = reply.read()
    try:
        data = json.loads(body)
    except ValueError:
        return body.decode(errors="replace").strip()[:2000] or reply.reason
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict):
            for key in ("message", "detail", "error"):
                if isinstance(error.get(key), str):
                    return error[key]
        if isinstance(error, str):
            return error
        if isinstance(data.get("detail"), str):
            return data["detail"]
    return str(data)[:2000]


def _retry_after(reply: Reply) -> float | None:
    value = reply.header("retry-after")
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _parse_completion(data: Any) -> Completion:
    """A whole answer (a server that ignored "stream"): chat or raw completion."""
    try:
        choices = []
        for i, choice in enumerate(data["choices"]):
            message = choice["message"] if "text" not in choice else {"content": choice["text"]}
            whole = {
                "index": int(choice.get("index", i)),
                "content": message.get("content") or "",
                "finish_reason": choice.get("finish_reason"),
            }
            if message.get("tool_calls"):
                whole["tool_calls"] = message["tool_calls"]
            if choice.get("logprobs"):
                whole["logprobs"] = choice["logprobs"]
            choices.append(whole)
    except (KeyError, TypeError, AttributeError, ValueError):
        raise ModelServerFailed("model server sent an answer without choices[].message") from None
    if not choices:
        raise ModelServerFailed("model server sent an answer without choices")
    return Completion(choices=choices, model=data.get("model"), usage=data.get("usage"))
