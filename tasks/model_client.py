"""Client of an OpenAI-compatible model server (vLLM, llama.cpp, Ollama, TGI).

One `ModelClient` per worker process: its pooled httpx client is shared by all
of the process's threads.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from settings import Config

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 60.0


class ModelServerError(Exception):
    """The model server could not answer; the message says why."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message, status_code)
        self.message = message
        self.status_code = status_code

    def __str__(self) -> str:
        return self.message


class ModelServerUnavailable(ModelServerError):
    """The model server could not be reached (refused, reset, DNS), even after retries."""


class ModelServerFailed(ModelServerError):
    """The model server answered with a server error or an unreadable answer, even after retries."""


class ModelServerTimeout(ModelServerError):
    """The model server did not answer in time, even after retries."""


class ModelServerRejected(ModelServerError):
    """The model server refused the request (unknown model, bad parameter); retrying cannot help."""


class Cancelled(Exception):
    """The job was cancelled: the model call was stopped and its connection closed."""


class Cancel:
    """Stops a model call from another thread: the call sees it between chunks, and
    its connection is closed at once, so the model server stops generating."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._response: httpx.Response | None = None

    def set(self) -> None:
        with self._lock:
            self._event.set()
            response = self._response
        if response is not None:
            response.close()

    def is_set(self) -> bool:
        return self._event.is_set()

    def attach(self, response: httpx.Response | None) -> None:
        with self._lock:
            self._response = response
        if response is not None and self._event.is_set():
            response.close()


class _Retryable(Exception):
    def __init__(self, error: ModelServerError, retry_after: float | None = None) -> None:
        self.error = error
        self.retry_after = retry_after


@dataclass
class Completion:
    """What a chat completion produced: every choice (more than one with ``n``)."""

    choices: list[dict[str, Any]]  # index, content, finish_reason
    model: str | None
    usage: dict[str, Any] | None

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
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        headers = {}
        if config.inner_llm_api_key:
            headers["Authorization"] = f"Bearer {config.inner_llm_api_key.get_secret_value()}"
        self._client_options: dict[str, Any] = {
            "base_url": config.inner_llm_url,
            "headers": headers,
            "timeout": httpx.Timeout(config.llm_timeout, connect=config.llm_connect_timeout),
            "limits": httpx.Limits(max_connections=2, max_keepalive_connections=2),
            "transport": transport,
            # Made once: each client would otherwise load the CA bundle again (17 ms).
            "verify": httpx.create_ssl_context(),
        }
        # One client (and connection) per worker thread: a pool shared by 64 threads
        # costs more CPU in its lock and bookkeeping than the call itself (bench/).
        self._local = threading.local()
        self._clients: list[httpx.Client] = []
        self._clients_lock = threading.Lock()
        self._url = config.inner_llm_url_shown
        self._default_model = config.default_model or None
        self._max_retries = config.llm_max_retries
        self._backoff = config.llm_retry_backoff
        self._deadline = config.llm_deadline
        self._timeout = config.llm_timeout
        self._connect_timeout = config.llm_connect_timeout
        self._sleep = sleep
        self._clock = clock
        self._served: list[str] | None = None
        self._served_lock = threading.Lock()

    @property
    def _http(self) -> httpx.Client:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = httpx.Client(**self._client_options)
            with self._clients_lock:
                self._clients.append(client)
        return client

    def close(self) -> None:
        """Close every thread's connections."""
        with self._clients_lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()

    def chat(
        self, request: ChatRequest, cancel: Cancel | None = None, on_delta: Callable[[int, str], None] | None = None
    ) -> Completion:
        """Ask for one chat completion and return its first choice.

        The answer is streamed, so that `cancel` can stop the call and the model server
        sees its connection close (and stops generating) at once. `on_delta(index, text)`
        receives each piece of the answer as it arrives.
        """
        body: dict[str, Any] = {
            "messages": request.messages,
            "temperature": request.temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        model = request.model or self._default_model or self._first_served_model()
        if model:
            body["model"] = model
        if request.tokens_limit is not None:
            body["max_tokens"] = request.tokens_limit
        stop = [word for word in request.stop_words if word]
        if stop:
            body["stop"] = stop
        body.update(request.sampling)
        try:
            return self._send("/v1/chat/completions", body, cancel, on_delta)
        except ModelServerRejected as exc:
            fitted = self._fit_to_context(exc, body)
            if fitted is None:
                raise self._explain_rejection(exc, model) from None
            return self._send("/v1/chat/completions", fitted, cancel, on_delta)

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
        on_delta: Callable[[int, str], None] | None = None,
    ) -> Any:
        attempt = 0
        relayed = False
        started = self._clock()
        give_up_at = started + self._deadline

        def relay(index: int, text: str) -> None:
            nonlocal relayed
            relayed = True
            assert on_delta is not None
            on_delta(index, text)

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

    def _timeouts(self, give_up_at: float) -> httpx.Timeout:
        """This attempt's timeouts: the configured ones, cut to what the deadline leaves."""
        left = max(0.001, give_up_at - self._clock())
        return httpx.Timeout(min(self._timeout, left), connect=min(self._connect_timeout, left))

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, MAX_RETRY_AFTER)
        # Exponential backoff with full jitter, so retries of many jobs do not arrive together.
        return random.uniform(0, self._backoff * 2**attempt)

    def _get_json(self, path: str, give_up_at: float) -> Any:
        with self._transport_errors():
            response = self._http.get(path, timeout=self._timeouts(give_up_at))
        self._check_status(response)
        try:
            return response.json()
        except ValueError:
            raise _Retryable(ModelServerFailed("model server sent an answer that is not JSON")) from None

    def _stream_completion(
        self,
        path: str,
        body: dict[str, Any],
        cancel: Cancel | None,
        on_delta: Callable[[int, str], None] | None,
        give_up_at: float,
    ) -> Completion:
        timeout = self._timeouts(give_up_at)
        try:
            with self._transport_errors(), self._http.stream("POST", path, json=body, timeout=timeout) as response:
                if cancel is not None:
                    cancel.attach(response)
                if response.status_code >= 400:
                    response.read()
                    self._check_status(response)
                if "text/event-stream" not in response.headers.get("content-type", ""):
                    # A server that ignores "stream" answers in one piece.
                    response.read()
                    return _parse_completion(_json_or_retry(response))
                return _read_events(response, cancel, on_delta, lambda: self._clock() >= give_up_at)
        except (_Retryable, ModelServerError, RuntimeError, ValueError, OSError):
            # A connection closed by Cancel.set() fails in whichever way the read was at.
            if cancel is not None and cancel.is_set():
                raise Cancelled from None
            raise
        finally:
            if cancel is not None:
                cancel.attach(None)

    @contextlib.contextmanager
    def _transport_errors(self) -> Iterator[None]:
        try:
            yield
        except httpx.TimeoutException as exc:
            kind = "connect to" if isinstance(exc, httpx.ConnectTimeout) else "get an answer from"
            raise _Retryable(
                ModelServerTimeout(f"timed out trying to {kind} the model server at {self._url}")
            ) from None
        except httpx.TransportError as exc:
            reason = str(exc) or type(exc).__name__
            raise _Retryable(ModelServerUnavailable(f"model server unreachable at {self._url}: {reason}")) from None

    def _check_status(self, response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        detail = _error_message(response)
        message = f"model server answered {response.status_code}: {detail}"
        if response.status_code in RETRYABLE_STATUS:
            raise _Retryable(ModelServerFailed(message, response.status_code), _retry_after(response))
        if response.status_code in (401, 403):
            # The worker's own credentials are wrong: the caller's request is not at fault.
            raise ModelServerFailed(message, response.status_code)
        raise ModelServerRejected(detail, response.status_code)


def _json_or_retry(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise _Retryable(ModelServerFailed("model server sent an answer that is not JSON")) from None


def _read_events(
    response: httpx.Response,
    cancel: Cancel | None,
    on_delta: Callable[[int, str], None] | None = None,
    past_deadline: Callable[[], bool] = lambda: False,
) -> Completion:
    """Join the server-sent chunks of a streamed chat completion, per choice."""
    parts: dict[int, list[str]] = {}
    finishes: dict[int, str | None] = {}
    model = None
    usage = None
    done = False
    for line in response.iter_lines():
        if cancel is not None and cancel.is_set():
            raise Cancelled
        if past_deadline():
            raise ModelServerTimeout("the model server's answer took longer than LLM_DEADLINE allows")
        # After [DONE] the body is still read to its end: closing a response with
        # unread body closes its connection, and the next job would pay for a new one.
        if done or not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            done = True
            continue
        try:
            chunk = json.loads(data)
        except ValueError:
            raise _Retryable(ModelServerFailed("model server sent a chunk that is not JSON")) from None
        if "error" in chunk:
            error = chunk["error"]
            message = error.get("message") if isinstance(error, dict) else str(error)
            raise _Retryable(ModelServerFailed(f"model server failed mid-answer: {message}"))
        model = chunk.get("model") or model
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices") or []:
            index = int(choice.get("index", 0))
            content = (choice.get("delta") or {}).get("content")
            parts.setdefault(index, [])
            if content:
                parts[index].append(content)
                if on_delta is not None:
                    on_delta(index, content)
            finishes[index] = choice.get("finish_reason") or finishes.get(index)
    choices = [
        {"index": index, "content": "".join(parts[index]), "finish_reason": finishes.get(index)}
        for index in sorted(parts)
    ]
    return Completion(choices=choices or [{"index": 0, "content": "", "finish_reason": None}], model=model, usage=usage)


def _error_message(response: httpx.Response) -> str:
    """The error text of an OpenAI-style (or TGI, Ollama, plain text) error answer."""
    try:
        data = response.json()
    except ValueError:
        return response.text.strip()[:2000] or response.reason_phrase
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


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _parse_completion(data: Any) -> Completion:
    try:
        choices = [
            {
                "index": int(choice.get("index", i)),
                "content": choice["message"].get("content") or "",
                "finish_reason": choice.get("finish_reason"),
            }
            for i, choice in enumerate(data["choices"])
        ]
    except (KeyError, TypeError, AttributeError, ValueError):
        raise ModelServerFailed("model server sent an answer without choices[].message") from None
    if not choices:
        raise ModelServerFailed("model server sent an answer without choices")
    return Completion(choices=choices, model=data.get("model"), usage=data.get("usage"))
