"""Client of one OpenAI-compatible model server (vLLM, llama.cpp, Ollama, TGI).

One `ModelClient` per worker process and model server, shared by the process's
threads; each thread keeps its own keep-alive connection (`tasks/model/http.py`).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import unquote, urlsplit

from shared.config import Config
from shared.contract import (
    ModelServerError,
    ModelServerFailed,
    ModelServerRejected,
    ModelServerTimeout,
    ModelServerUnavailable,
)
from shared.telemetry import tracing
from tasks.model.cancel import Cancel, Cancelled
from tasks.model.http import ConnectTimeout, HttpTransport, Reply, Transport
from tasks.model.messages import MessagesChunks, messages_body, parse_message
from tasks.model.protocol import (
    CONTEXT_ERROR,
    OWN_FIELDS,
    UNKNOWN_MODEL,
    ChatRequest,
    Completion,
    Embedded,
    Retryable,
    error_message,
    fitted_max_tokens,
    json_or_retry,
    parse_completion,
    parse_embeddings,
    retry_after,
    server_priority,
)
from tasks.model.stream import OnDelta, read_events

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 60.0


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
        self._url = config.inner_llm_url_shown  # for logs: a client's answer names no address
        self._default_model = config.default_model or None
        # Which model server, as a client's answer may say (its address is for the logs).
        self._which = f" (model {config.default_model!r})" if config.default_model else ""
        self._addresses = {part for part in (url.netloc, url.hostname or "", config.inner_llm_url) if part}
        self._priority_scheduling = config.inner_llm_priority_scheduling
        self._messages_api = config.inner_llm_messages_api  # it serves Anthropic's /v1/messages itself
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

    def chat(
        self,
        request: ChatRequest,
        cancel: Cancel | None = None,
        on_delta: OnDelta | None = None,
        give_up_at: float | None = None,
    ) -> Completion:
        """Ask for one chat completion and return its first choice.

        The answer is streamed, so that `cancel` can stop the call and the model server
        sees its connection close (and stops generating) at once. `on_delta(index, text, extra)`
        receives each piece of the answer as it arrives. `give_up_at` (time.monotonic())
        ends every attempt; by default LLM_DEADLINE from now. A /v1/messages job goes to
        the server's own /v1/messages when it serves one (tasks/model/messages.py).
        """
        if request.anthropic is not None and self._messages_api:
            return self._message(request, cancel, on_delta, give_up_at)
        body: dict[str, Any] = {k: v for k, v in request.extra.items() if k not in OWN_FIELDS}
        if not request.raw:
            body["messages"] = request.messages
        body.update(stream=True, stream_options={"include_usage": True})
        if request.temperature is not None:  # else the model server's own default applies
            body["temperature"] = request.temperature
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
            return self._send(path, body, cancel, on_delta, give_up_at)
        except ModelServerRejected as exc:
            fitted = self._fit_to_context(exc, body)
            if fitted is None:
                raise self._explain_rejection(exc, model) from None
            return self._send(path, fitted, cancel, on_delta, give_up_at)

    def _message(
        self, request: ChatRequest, cancel: Cancel | None, on_delta: OnDelta | None, give_up_at: float | None
    ) -> Completion:
        """The job's Anthropic request, sent as given to the server's own /v1/messages."""
        model = request.model or self._default_model or self._first_served_model()
        body = messages_body(request, model)
        try:
            return self._send("/v1/messages", body, cancel, on_delta, give_up_at, anthropic=True)
        except ModelServerRejected as exc:
            # Anthropic's max_tokens is required: fitted to the context only where the server tells the room.
            fitted = self._fit_to_context(exc, body)
            if fitted is None or "max_tokens" not in fitted:
                raise self._explain_rejection(exc, model) from None
            return self._send("/v1/messages", fitted, cancel, on_delta, give_up_at, anthropic=True)

    def embeddings(
        self, inputs: list[str] | list[list[int]], options: dict[str, Any], give_up_at: float | None = None
    ) -> Embedded:
        """The model server's embeddings of `inputs` (``/v1/embeddings``), in their order,
        with `options` (``model``, ``dimensions``, ``user``, a server's own fields)."""
        body: dict[str, Any] = {**options, "input": inputs, "encoding_format": "float"}
        model = options.get("model") or self._default_model or self._first_served_model()
        if model:
            body["model"] = model
        data = self._send("/v1/embeddings", body, give_up_at=give_up_at, whole=True)
        return parse_embeddings(data, len(inputs))

    def served_models(self) -> list[str]:
        """The model ids the server lists at ``/v1/models`` (empty if it lists none)."""
        data = self._send("/v1/models", None)
        items = data.get("data") if isinstance(data, dict) else None
        return [str(item["id"]) for item in items or [] if isinstance(item, dict) and "id" in item]

    def probe(self, timeout: float = 2.0) -> str | None:
        """None when the server answers its ``/health`` (or, where it has none,
        ``/v1/models``) with a success; else why not. One attempt, no retries."""
        failure = "no answer"
        for path in ("/health", "/v1/models"):
            try:
                reply = self._transport.send("GET", path, None, timeout, timeout)
            except (OSError, http.client.HTTPException) as exc:
                return f"{path}: {str(exc) or type(exc).__name__}"
            try:
                reply.read()
            except (OSError, http.client.HTTPException) as exc:
                return f"{path}: {str(exc) or type(exc).__name__}"
            finally:
                reply.close()
            if reply.status < 400:
                return None
            failure = f"{path} answered {reply.status}"
            if reply.status != 404:
                return failure
        return failure

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
        if "max_tokens" not in body or not CONTEXT_ERROR.search(exc.message):
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
        if exc.status_code != 404 and not UNKNOWN_MODEL.search(exc.message):
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
        give_up_at: float | None = None,
        whole: bool = False,
        anthropic: bool = False,
    ) -> Any:
        """`body` POSTed to `path` (None: a GET), answered whole (`whole`) or streamed
        (as Anthropic's events: `anthropic`), with retries."""
        attempt = 0
        relayed = False
        started = self._clock()
        if give_up_at is None:
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
                if whole:
                    return self._post_json(path, body, give_up_at)
                return self._stream_completion(path, body, cancel, relay if on_delta else None, give_up_at, anthropic)
            except Retryable as retry:
                delay = self._delay(attempt, retry.retry_after)
                # Once pieces of the answer were passed on, a retry would send them twice.
                last = attempt >= self._max_retries or self._clock() + delay >= give_up_at
                if last or relayed or (cancel is not None and cancel.is_set()):
                    error = retry.error
                    if self._max_retries == 0:  # one server of several: the pool tries again elsewhere
                        raise error from None
                    spent = self._clock() - started
                    log.warning("model server %s: %s (%d attempt(s))", self._url, error, attempt + 1)
                    raise type(error)(
                        f"{error.message} (gave up after {attempt + 1} attempt{'s' if attempt else ''}"
                        f" in {spent:.1f}s)",
                        error.status_code,
                    ) from None
                log.warning(
                    "model server %s attempt %d failed (%s); retrying in %.2fs",
                    self._url,
                    attempt + 1,
                    retry.error,
                    delay,
                )
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
                return json_or_retry(reply)
            finally:
                reply.close()

    def _post_json(self, path: str, body: dict[str, Any], give_up_at: float) -> Any:
        timeout, connect_timeout = self._timeouts(give_up_at)
        data = json.dumps(body).encode()
        traced = self._span_attributes(body) if tracing.enabled() else None
        with self._transport_errors(), tracing.span(f"POST {path}", tracing.CLIENT, traced):
            reply = self._transport.send("POST", path, data, timeout, connect_timeout, tracing.inject())
            try:
                self._check_status(reply)
                return json_or_retry(reply)
            finally:
                reply.close()

    def _stream_completion(
        self,
        path: str,
        body: dict[str, Any],
        cancel: Cancel | None,
        on_delta: OnDelta | None,
        give_up_at: float,
        anthropic: bool = False,
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
                        return (parse_message if anthropic else parse_completion)(json_or_retry(reply))
                    translate = MessagesChunks().chunk if anthropic else None
                    completion = read_events(reply, cancel, on_delta, lambda: self._clock() >= give_up_at, translate)
                    if completion.first_piece_at is not None:
                        tracing.event("first token", completion.first_piece_at)
                    return completion
                finally:
                    reply.close()
        except (Retryable, ModelServerError, RuntimeError, ValueError, OSError):
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
            raise Retryable(ModelServerTimeout(f"timed out trying to {kind} the model server{self._which}")) from None
        except (OSError, http.client.HTTPException) as exc:
            # Which part failed, and how; where it lives is for the logs (the retry's line).
            reason = str(exc) or type(exc).__name__
            # Longest first: "gpu-a" replaced before "gpu-a:8000" would leave its port.
            for address in sorted(self._addresses, key=len, reverse=True):
                reason = reason.replace(address, "<model server>")
            raise Retryable(ModelServerUnavailable(f"model server unreachable{self._which}: {reason}")) from None

    def _check_status(self, reply: Reply) -> None:
        if reply.status < 400:
            return
        detail = error_message(reply)
        message = f"model server answered {reply.status}: {detail}"
        if reply.status in RETRYABLE_STATUS:
            raise Retryable(ModelServerFailed(message, reply.status), retry_after(reply))
        if reply.status in (401, 403):
            # The worker's own credentials are wrong: the caller's request is not at fault.
            raise ModelServerFailed(message, reply.status)
        raise ModelServerRejected(detail, reply.status)
