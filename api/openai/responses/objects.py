"""A response as OpenAI's objects: the response (`response_object`), and its stream of
typed events with their sequence numbers (`ResponseEvents`), rendered from the job's
stream the same way for every reader, so that `starting_after` finds its place."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from api.http.sse import sse
from api.http.statuses import Refusal
from api.openai.responses.translate import (
    call_item,
    finished_status,
    item_id,
    message_item,
    output_items,
    output_text,
    usage,
)
from shared.contract import JobStatus

# The job's status (GET /jobs) → the response's.
STATUSES = {JobStatus.QUEUED: "queued", JobStatus.RUNNING: "in_progress", JobStatus.SUCCEEDED: "completed",
            JobStatus.FAILED: "failed", JobStatus.CANCELLED: "cancelled"}  # fmt: skip


def error_code(status: int) -> str:
    return {429: "rate_limit_exceeded", 400: "invalid_prompt", 422: "invalid_prompt"}.get(status, "server_error")


def response_object(
    record: dict[str, Any],
    status: str,
    answer: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
    output: list[dict[str, Any]] | None = None,
    completed_at: float | None = None,
) -> dict[str, Any]:
    """The response of `record`, `status` now: with its output and usage when `answer`
    is the finished job's, its `error` when it failed."""
    asked = record["request"]
    incomplete = None
    if answer is not None:
        status, incomplete = finished_status(answer)
    tools = [
        {"type": "function", "name": t["name"], "description": t.get("description"),
         "parameters": t.get("parameters"), "strict": t.get("strict", True)}
        for t in asked.get("tools") or []
    ]  # fmt: skip
    body: dict[str, Any] = {
        "id": record["id"],
        "object": "response",
        "created_at": record["created_at"],
        "status": status,
        "background": bool(asked.get("background")),
        "error": error,
        "incomplete_details": incomplete,
        "instructions": asked.get("instructions"),
        "max_output_tokens": asked.get("max_output_tokens"),
        "model": (answer or {}).get("model") or record["model"],
        "output": output if output is not None else (output_items(record["id"], answer) if answer else []),
        "parallel_tool_calls": asked.get("parallel_tool_calls", True),
        "previous_response_id": asked.get("previous_response_id"),
        "store": asked.get("store", True),
        # As asked; None: not set, the model server's own default applied (none was sent).
        "temperature": asked.get("temperature"),
        "text": asked.get("text") or {"format": {"type": "text"}},
        "tool_choice": asked.get("tool_choice") or "auto",
        "tools": tools,
        "top_p": asked.get("top_p"),
        "truncation": "disabled",
        "usage": usage(answer) if answer is not None else None,
        "user": asked.get("user"),
        "metadata": asked.get("metadata") or {},
        # The rest of the object as the Open Responses specification requires it, each
        # present (null when it does not apply): penalties passed on as asked; no
        # reasoning, tool-call cap, logprobs or service tier of the gateway's own.
        "presence_penalty": asked.get("presence_penalty", 0.0),
        "frequency_penalty": asked.get("frequency_penalty", 0.0),
        "top_logprobs": 0,
        "reasoning": {"effort": None, "summary": None},
        "max_tool_calls": None,
        "service_tier": "default",
        "safety_identifier": asked.get("safety_identifier"),
        "prompt_cache_key": asked.get("prompt_cache_key"),
        "completed_at": int(completed_at or time.time()) if answer is not None else None,
    }
    return body


class ResponseEvents:
    """The typed events of one response's stream, from the job's pieces: `opening`
    (response.created, response.in_progress), then `render(piece)` for each piece and
    for the end. One instance per reader: every reader renders the same events."""

    def __init__(self, record: dict[str, Any], frame: Callable[[dict[str, Any], str], str] = sse) -> None:
        self._record = record
        self._frame = frame  # an event as sent: a server-sent event, or a WebSocket's message
        self._id = record["id"]
        self._seq = -1
        self._items: list[dict[str, Any]] = []  # the output as it is streamed
        self._message: int | None = None  # the open message item's place in it
        self._text = ""
        self._calls: dict[int, int] = {}  # a tool call's index in the chat stream → its item's place

    def _event(self, kind: str, **fields: Any) -> str:
        self._seq += 1
        return self._frame({"type": kind, "sequence_number": self._seq, **fields}, kind)

    def opening(self) -> list[str]:
        record = self._record
        first = "queued" if record["request"].get("background") else "in_progress"
        return [
            self._event("response.created", response=response_object(record, first)),
            self._event("response.in_progress", response=response_object(record, "in_progress")),
        ]

    def render(self, event: dict[str, Any]) -> list[str]:
        if "end" in event:
            return self._end(event["end"], event.get("at"))
        if event.get("index", 0) != 0:
            return []  # one choice: a response has no n
        out: list[str] = []
        if event["text"]:
            out += self._open_message()
            self._text += event["text"]
            out.append(self._event("response.output_text.delta", item_id=self._items[self._message]["id"],
                                   output_index=self._message, content_index=0, delta=event["text"],
                                   logprobs=[]))  # type: ignore[index]  # fmt: skip
        for call in (event.get("extra") or {}).get("tool_calls") or []:
            out += self._call_piece(call)
        return out

    def _open_message(self) -> list[str]:
        if self._message is not None:
            return []
        self._message = len(self._items)
        item = message_item(item_id(self._id, "msg", 0), None, "in_progress")
        self._items.append(item)
        added = self._event("response.output_item.added", output_index=self._message, item=item)
        part = self._event("response.content_part.added", item_id=item["id"], output_index=self._message,
                           content_index=0, part=output_text(""))  # fmt: skip
        return [added, part]

    def _call_piece(self, call: dict[str, Any]) -> list[str]:
        index = int(call.get("index", 0))
        function = call.get("function") or {}
        out: list[str] = []
        if index not in self._calls:
            self._calls[index] = place = len(self._items)
            n = len(self._calls) - 1
            item = call_item(item_id(self._id, "fc", n), call.get("id") or item_id(self._id, "call", n),
                             function.get("name") or "", "", "in_progress")  # fmt: skip
            self._items.append(item)
            out.append(self._event("response.output_item.added", output_index=place, item=dict(item)))
        place = self._calls[index]
        item = self._items[place]
        if function.get("name") and not item["name"]:
            item["name"] = function["name"]
        delta = function.get("arguments") or ""
        if delta:
            item["arguments"] += delta
            out.append(self._event("response.function_call_arguments.delta", item_id=item["id"],
                                   output_index=place, delta=delta))  # fmt: skip
        return out

    def _end(self, answer: dict[str, Any], at: float | None) -> list[str]:
        out: list[str] = []
        status, _ = finished_status(answer)
        item_status = "completed" if status == "completed" else "incomplete"
        if not self._items:
            out += self._open_message()  # an empty answer is one empty message
        for place, item in enumerate(self._items):
            if item["type"] == "message":
                part = output_text(self._text)
                out.append(self._event("response.output_text.done", item_id=item["id"], output_index=place,
                                       content_index=0, text=self._text, logprobs=[]))  # fmt: skip
                out.append(self._event("response.content_part.done", item_id=item["id"], output_index=place,
                                       content_index=0, part=part))  # fmt: skip
                item.update(content=[part], status=item_status)
            else:
                out.append(self._event("response.function_call_arguments.done", item_id=item["id"],
                                       output_index=place, arguments=item["arguments"], name=item["name"]))  # fmt: skip
                item["status"] = "completed"
            out.append(self._event("response.output_item.done", output_index=place, item=item))
        final = response_object(self._record, status, answer, output=self._items, completed_at=at)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        out.append(self._event(kind, response=final))
        return out

    def failed(self, refused: Refusal) -> str:
        """The last event of a response that failed (or was cancelled) after its stream began."""
        if refused.status == 409 and "cancelled" in refused.message:
            return self._event("error", code="cancelled", message=refused.message, param=None)
        error = {"code": error_code(refused.status), "message": refused.message}
        return self._event("response.failed", response=response_object(self._record, "failed", error=error))
