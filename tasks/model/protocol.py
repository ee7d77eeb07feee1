"""What a model server is asked and what it answers, in OpenAI's chat-completions terms:
the request (`ChatRequest`, and the body it makes), the answer (`Completion`), and how
servers' errors read (context overflow, unknown model, retry-after)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from shared.contract import DEFAULT_PRIORITY, ModelServerError, ModelServerFailed
from shared.tenants import DEFAULT_TENANT
from tasks.model.http import Reply


class Retryable(Exception):
    """A failure worth another attempt (transient): the error to report if none is left."""

    def __init__(self, error: ModelServerError, retry_after: float | None = None) -> None:
        self.error = error
        self.retry_after = retry_after


@dataclass
class Completion:
    """What a chat completion produced: every choice (more than one with ``n``)."""

    # index, content, finish_reason; tool_calls, logprobs, reasoning_content, stop_reason (vLLM's) when given
    choices: list[dict[str, Any]]
    model: str | None
    usage: dict[str, Any] | None
    # When (time.monotonic()) the first piece of the answer arrived: its time to first token.
    first_piece_at: float | None = None
    # The model (the registry's name) and server that answered, for a model with several
    # servers or fallbacks (tasks/model/pooled.py).
    served_by: tuple[str, str] | None = None
    slot_wait: float = 0.0  # seconds it waited for a free slot of one of its model's servers

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
            # GET /jobs/{id} shows the server to admin keys only.
            **({"served_model": self.served_by[0], "server": self.served_by[1]} if self.served_by else {}),
        }


@dataclass
class ChatRequest:
    """One chat completion to ask for, in the spec's terms."""

    messages: list[dict[str, str]]
    temperature: float | None = 0.2  # None: the model server's own (none is sent)
    tokens_limit: int | None = 8096
    stop_words: list[str] = field(default_factory=list)
    model: str | None = None
    sampling: dict[str, Any] = field(default_factory=dict)  # top_p, seed, n, penalties: passed as given
    # An OpenAI request's other fields (tools, response_format, logprobs, prompt, ...):
    # passed as given, never over what the gateway sets itself (model, stream).
    extra: dict[str, Any] = field(default_factory=dict)
    raw: bool = False  # a raw completion (/v1/completions, `extra["prompt"]`), not a chat
    priority: int | None = None  # the job's: 0 (batch) .. 9 (most urgent); None: the default
    accepted_at: float | None = None  # when the API accepted the job (time.time()): its place in line for a slot
    fallbacks: list[str] | None = None  # the models to fall back to (None: its model's; []: none)
    tenant: str = DEFAULT_TENANT  # whose job it is: its own prefix affinity, its turns for a slot
    weight: float = 1.0  # its tenant's weight: its share of the turns for a slot while tenants wait
    # A /v1/messages request as its client sent it (Anthropic's body): sent as given to a
    # server that serves /v1/messages itself (tasks/model/messages.py); `messages` and
    # `extra` are its translation, for any other.
    anthropic: dict[str, Any] | None = None


@dataclass(frozen=True)
class Turn:
    """A call's place in line for a server's slot (tasks/model/pooled.py): its job's
    priority (None: the default), the time (the API's clock) it was accepted, and whose
    it is (its tenant and the tenant's weight: the line takes tenants in turns). A call
    of several jobs (all of one tenant) takes the most urgent one's priority and the
    oldest's time."""

    priority: int | None = None
    accepted_at: float | None = None
    tenant: str = DEFAULT_TENANT
    weight: float = 1.0

    def with_job(self, other: Turn) -> Turn:
        """The place of a call that also carries a job of place `other` (of the same tenant)."""
        priorities = [p for p in (self.priority, other.priority) if p is not None]
        accepted = [a for a in (self.accepted_at, other.accepted_at) if a is not None]
        return Turn(
            max(priorities) if priorities else None, min(accepted) if accepted else None, self.tenant, self.weight
        )


def server_priority(priority: int | None) -> int:
    """vLLM's `priority` for a job's: vLLM serves lower numbers first (its default is 0),
    the gateway higher ones (0 batch .. 9 most urgent), so 9 is 0 there and 0 is 9."""
    return 9 - (DEFAULT_PRIORITY if priority is None else max(0, min(9, priority)))


# What the gateway sets in every request to the model server itself.
OWN_FIELDS = frozenset({"model", "stream", "stream_options", "messages", "fallbacks", "disable_fallbacks"})


# How servers say that prompt + max_tokens exceed the context window.
#   vLLM (old):  "This model's maximum context length is 2048 tokens. However, you requested
#                 8200 tokens (104 in the messages, 8096 in the completion)."
#   vLLM (new):  "... maximum context length is 2048 tokens and your request has 104 input tokens"
#   TGI:         "`inputs` tokens + `max_new_tokens` must be <= 2048. Given: 104 `inputs` tokens ..."
CONTEXT_ERROR = re.compile(
    r"maximum context length|context length|context window|max_total_tokens"
    r"|`max_new_tokens` must be|max_tokens.{0,40}too large",
    re.IGNORECASE,
)
_CONTEXT_SIZE = re.compile(r"(?:maximum context length is|must be <=)\s*(\d+)", re.IGNORECASE)
_INPUT_TOKENS = re.compile(
    r"(\d+) in the messages|has (\d+) input tokens|Given: (\d+) `inputs` tokens|(\d+) input tokens",
    re.IGNORECASE,
)
UNKNOWN_MODEL = re.compile(r"model.{0,80}(does not exist|not found|not exist|unknown)", re.IGNORECASE)


def fitted_max_tokens(message: str) -> int | None:
    """From a context-overflow error, the largest max_tokens that fits, if the message tells."""
    size = _CONTEXT_SIZE.search(message)
    used = _INPUT_TOKENS.search(message)
    if not size or not used:
        return None
    room = int(size.group(1)) - int(next(g for g in used.groups() if g))
    return room if room > 0 else None


def json_or_retry(reply: Reply) -> Any:
    try:
        return json.loads(reply.read())
    except ValueError:
        raise Retryable(ModelServerFailed("model server sent an answer that is not JSON")) from None


def error_message(reply: Reply) -> str:
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


def retry_after(reply: Reply) -> float | None:
    value = reply.header("retry-after")
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def reasoning_of(said: dict[str, Any]) -> str:
    """The reasoning a delta or a message holds, as a server with a reasoning parser
    sends it: ``reasoning_content`` (llama.cpp, vLLM until 0.10) or ``reasoning`` (vLLM
    since); the first given, never both."""
    for name in ("reasoning_content", "reasoning"):
        if isinstance(said.get(name), str) and said[name]:
            return str(said[name])
    return ""


def parse_completion(data: Any) -> Completion:
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
            reasoning = reasoning_of(message)
            if reasoning:
                whole["reasoning_content"] = reasoning
            if isinstance(choice.get("stop_reason"), str):
                whole["stop_reason"] = choice["stop_reason"]
            choices.append(whole)
    except (KeyError, TypeError, AttributeError, ValueError):
        raise ModelServerFailed("model server sent an answer without choices[].message") from None
    if not choices:
        raise ModelServerFailed("model server sent an answer without choices")
    return Completion(choices=choices, model=data.get("model"), usage=data.get("usage"))


@dataclass
class Embedded:
    """A model server's embeddings of a list of inputs, in their order."""

    vectors: list[list[float]]
    usage: dict[str, Any] | None
    model: str | None
    served_by: tuple[str, str] | None = None  # as a Completion's


def parse_embeddings(data: Any, count: int) -> Embedded:
    """``/v1/embeddings``'s answer: one vector per input, put in the inputs' order by
    their ``index``; ModelServerFailed when it is not that."""
    try:
        items = sorted(data["data"], key=lambda item: int(item.get("index", 0)))
        vectors = [[float(x) for x in item["embedding"]] for item in items]
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ModelServerFailed("model server sent an embeddings answer without data[].embedding") from None
    if len(vectors) != count:
        raise ModelServerFailed(f"model server sent {len(vectors)} embeddings for {count} inputs")
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else None
    model = data.get("model") if isinstance(data.get("model"), str) else None
    return Embedded(vectors, usage, model)
