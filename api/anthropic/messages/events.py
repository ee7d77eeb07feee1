"""A message's answer as Anthropic's stream events, rendered from the chat job's pieces
as the worker relays them (api/http/sse.py numbers them and resumes them):

``message_start``, ``ping``, then for each content block (``thinking``, ``text``,
``tool_use``, in the order the model said them) a ``content_block_start``, its
``content_block_delta`` events (``thinking_delta``, ``text_delta``, ``input_json_delta``)
and a ``content_block_stop``; then ``message_delta`` (the stop reason, the usage) and
``message_stop``. A failure after the first byte is an ``error`` event. Each event is
written as Anthropic's are: ``event: <type>`` and ``data: {...}`` (with its ``id:``).

The same job's pieces render the same events, in the same order, for every reader:
a client that comes back with ``Last-Event-ID`` gets those after the last it had.
"""

from __future__ import annotations

import json
from typing import Any

from api.anthropic.http import anthropic_error, anthropic_status
from api.anthropic.messages.translate import (
    content_blocks,
    first_choice,
    message_id,
    stop_reason,
    thinking_block,
    tool_input,
    tool_use_block,
    tool_use_id,
    usage,
)
from api.http.sse import sse
from api.http.statuses import Refusal


def event(data: dict[str, Any]) -> str:
    """One of Anthropic's events: named by its data's type."""
    return sse(data, event=data["type"])


class MessageEvents:
    """Renders one request's stream: its state is the blocks opened so far."""

    def __init__(self, job_id: str, model: str, stop_sequences: list[str] | None) -> None:
        self._job_id = job_id
        self._model = model
        self._stop_sequences = stop_sequences
        self._blocks = 0  # blocks started so far
        self._open: tuple[str, int] | None = None  # (kind, block index) of the block not stopped yet
        self._calls: dict[int, int] = {}  # a tool call's index in the answer → its block's index

    def opening(self) -> list[str]:
        """message_start (the usage is told at the end: the model server counts as it ends), then a ping."""
        message = {
            "id": message_id(self._job_id),
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return [event({"type": "message_start", "message": message}), event({"type": "ping"})]

    def render(self, piece: dict[str, Any]) -> list[str]:
        """The events of one of the job's pieces, or of its end."""
        if "end" in piece:
            return self._end(piece["end"], bool(piece.get("whole")))
        if piece.get("whole") or piece.get("index", 0) != 0:
            # Read from the stored answer (its stream gone): rendered whole from the end.
            return []
        out: list[str] = []
        extra = piece.get("extra") or {}
        if extra.get("reasoning_content"):
            delta = {"type": "thinking_delta", "thinking": extra["reasoning_content"]}
            out += self._into("thinking", lambda: thinking_block(""), delta)
        if piece.get("text"):
            out += self._into(
                "text", lambda: {"type": "text", "text": ""}, {"type": "text_delta", "text": piece["text"]}
            )
        for call in extra.get("tool_calls") or []:
            out += self._call(call)
        return out

    def failed(self, refused: Refusal) -> str:
        """A failure after the stream began: Anthropic's error event."""
        return event(anthropic_error(anthropic_status(refused), refused.message))

    def _into(self, kind: str, opened: Any, delta: dict[str, Any]) -> list[str]:
        """`delta` into the open block of `kind`, one started first when another is open."""
        out: list[str] = []
        if self._open is None or self._open[0] != kind:
            out += self._stop()
            out += self._start(kind, opened())
        assert self._open is not None
        return [*out, event({"type": "content_block_delta", "index": self._open[1], "delta": delta})]

    def _call(self, call: dict[str, Any]) -> list[str]:
        """A piece of a tool call: its first starts its block (with its id and name)."""
        out: list[str] = []
        at = int(call.get("index", 0)) if isinstance(call.get("index"), int) else len(self._calls)
        function = call.get("function") or {}
        if at not in self._calls:
            out += self._stop()
            name = function.get("name") or ""
            out += self._start(f"tool:{at}", tool_use_block(call.get("id") or tool_use_id(self._job_id, at), name, {}))
            self._calls[at] = self._blocks - 1
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            delta = {"type": "input_json_delta", "partial_json": arguments}
            out.append(event({"type": "content_block_delta", "index": self._calls[at], "delta": delta}))
        return out

    def _start(self, kind: str, block: dict[str, Any]) -> list[str]:
        self._open = (kind, self._blocks)
        self._blocks += 1
        return [event({"type": "content_block_start", "index": self._open[1], "content_block": block})]

    def _stop(self) -> list[str]:
        if self._open is None:
            return []
        index, self._open = self._open[1], None
        return [event({"type": "content_block_stop", "index": index})]

    def _end(self, answer: dict[str, Any], whole: bool) -> list[str]:
        choice = first_choice(answer)
        out: list[str] = []
        if whole:
            # Nothing was streamed: every block of the answer, each in one delta.
            for block in content_blocks(self._job_id, choice):
                out += self._whole_block(block)
        else:
            # Calls the pieces did not bring (a stream cut short, read on from the answer).
            for n, call in enumerate(choice.get("tool_calls") or []):
                if n not in self._calls:
                    function = call.get("function") or {}
                    out += self._stop()
                    named = tool_use_block(call.get("id") or tool_use_id(self._job_id, n), function.get("name") or "",
                                           tool_input(function.get("arguments")))  # fmt: skip
                    out += self._whole_block(named)
            if self._blocks == 0:
                out += self._start("text", {"type": "text", "text": ""})
        out += self._stop()
        reason, sequence = stop_reason(choice, self._stop_sequences)
        used = usage(answer)  # cumulative, as Anthropic's: the input's too, untold at the start
        return [
            *out,
            event(
                {"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": sequence}, "usage": used}
            ),
            event({"type": "message_stop"}),
        ]

    def _whole_block(self, block: dict[str, Any]) -> list[str]:
        """A block started empty, given whole in one delta, and stopped."""
        kind = block["type"]
        if kind == "thinking":
            out = self._start(kind, thinking_block(""))
            delta = {"type": "thinking_delta", "thinking": block["thinking"]}
        elif kind == "text":
            out = self._start(kind, {"type": "text", "text": ""})
            delta = {"type": "text_delta", "text": block["text"]} if block["text"] else None
        else:
            out = self._start(kind, {**block, "input": {}})
            delta = {"type": "input_json_delta", "partial_json": _json(block["input"])} if block["input"] else None
        if delta is not None:
            out.append(event({"type": "content_block_delta", "index": self._blocks - 1, "delta": delta}))
        return [*out, *self._stop()]


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
