"""Reading a streamed answer (server-sent events) into a `Completion`, piece by piece."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from shared.contract import ModelServerFailed, ModelServerTimeout
from tasks.model.cancel import Cancel, Cancelled
from tasks.model.http import Reply
from tasks.model.protocol import Completion, Retryable, reasoning_of

# Called with each piece of a streamed answer: choice index, text, and what else the
# piece brought (tool-call pieces, logprobs, reasoning) or None.
OnDelta = Callable[[int, str, "dict[str, Any] | None"], None]


def read_events(
    reply: Reply,
    cancel: Cancel | None,
    on_delta: OnDelta | None = None,
    past_deadline: Callable[[], bool] = lambda: False,
    translate: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None,
) -> Completion:
    """Join the server-sent chunks of a streamed completion, per choice: the text, the
    tool calls (their arguments arrive in pieces), the logprobs and the reasoning. With
    `translate`, the stream is Anthropic's events (a server's own /v1/messages), each
    read as the chunk `translate` makes of it (None: nothing to join), to its
    ``message_stop``."""
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
            raise Retryable(ModelServerFailed("model server sent a chunk that is not JSON")) from None
        if not isinstance(chunk, dict):
            continue  # llama.cpp opens a stream of several prompts with "data: null"
        if translate is not None and "error" not in chunk:
            if chunk.get("type") == "message_stop":
                done = True
                continue
            chunk = translate(chunk)
            if chunk is None:
                continue
        if "error" in chunk:
            error = chunk["error"]
            message = error.get("message") if isinstance(error, dict) else str(error)
            raise Retryable(ModelServerFailed(f"model server failed mid-answer: {message}"))
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
    if not done and not any(choice.finish_reason for choice in choices.values()):
        # The connection ended mid-answer (a server killed or restarted closes it cleanly
        # between chunks): what came is not the answer.
        raise Retryable(ModelServerFailed("the model server's answer ended before it was complete"))
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
        self.reasoning: list[str] = []
        self.stop_reason: str | None = None

    def add(self, piece: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
        """Take one chunk's piece of this choice; return its text and what else it
        brought (tool-call pieces, logprobs, reasoning), as a streaming client gets them."""
        delta = piece.get("delta") or {}
        text = delta.get("content") if "delta" in piece else piece.get("text")
        text = text if isinstance(text, str) else ""
        if text:
            self.parts.append(text)
        self.finish_reason = piece.get("finish_reason") or self.finish_reason
        # vLLM names the stop string that ended the answer (finish_reason "stop").
        if isinstance(piece.get("stop_reason"), str):
            self.stop_reason = piece["stop_reason"]
        extra: dict[str, Any] = {}
        reasoning = reasoning_of(delta)
        if reasoning:
            self.reasoning.append(reasoning)
            extra["reasoning_content"] = reasoning
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
        if self.reasoning:
            whole["reasoning_content"] = "".join(self.reasoning)
        if self.stop_reason is not None:
            whole["stop_reason"] = self.stop_reason
        return whole
