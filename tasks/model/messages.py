"""A model server's own Anthropic Messages API (``POST /v1/messages``: vLLM's, llama.cpp's),
for a model the registry says serves it (``messages_api: true``): a /v1/messages job's
request sent there as its client gave it, and the answer read back into the same
`Completion` (and the same pieces, as they stream) a chat completion gives, so that
the rest of the job's way (relay, result, retries, failover) is the same.

Each event of the server's stream is read as the chat-completion chunk saying the same
(`MessagesChunks`): text and thinking deltas as content and reasoning, a tool_use block
and its input_json deltas as a tool call and its arguments, the stop reason as the
finish reason (a stop_sequence as vLLM's stop string), the usage as a chat's.
"""

from __future__ import annotations

import json
from typing import Any

from shared.contract import ModelServerFailed
from tasks.model.protocol import ChatRequest, Completion

# Anthropic's stop_reason as a chat answer's finish_reason.
FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
          "refusal": "content_filter", "pause_turn": "stop", "model_context_window_exceeded": "length"}  # fmt: skip
# What the gateway sets in the request itself (the rest is the client's, as given).
OWN = frozenset({"model", "stream"})


def messages_body(request: ChatRequest, model: str | None) -> dict[str, Any]:
    """The body of ``/v1/messages`` for a job: its client's request, streamed, for
    `model` (the server's name for it), within the job's max_tokens."""
    assert request.anthropic is not None
    body = {key: value for key, value in request.anthropic.items() if key not in OWN}
    if model:
        body["model"] = model
    if request.tokens_limit is not None:
        body["max_tokens"] = request.tokens_limit
    body["stream"] = True
    return body


def _piece(delta: dict[str, Any], finish: str | None = None, **more: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish, **more}]}


class MessagesChunks:
    """Reads one stream of Anthropic's events, each as a chat-completion chunk (or None)."""

    def __init__(self) -> None:
        self._calls: dict[int, int] = {}  # a tool_use block's index → its call's index
        self._input_tokens = 0

    def chunk(self, event: dict[str, Any]) -> dict[str, Any] | None:
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            self._input_tokens = int((message.get("usage") or {}).get("input_tokens") or 0)
            return {"model": message.get("model"), "choices": []}
        if kind == "content_block_start":
            return self._start(int(event.get("index", 0)), event.get("content_block") or {})
        if kind == "content_block_delta":
            return self._delta(int(event.get("index", 0)), event.get("delta") or {})
        if kind == "message_delta":
            said = event.get("delta") or {}
            used = event.get("usage") or {}
            prompt = int(used.get("input_tokens") or self._input_tokens)
            completion = int(used.get("output_tokens") or 0)
            reason = said.get("stop_reason")
            finish = FINISH.get(reason, "stop") if reason else None
            sequence = said.get("stop_sequence") if isinstance(said.get("stop_sequence"), str) else None
            chunk = _piece({}, finish, **({"stop_reason": sequence} if sequence else {}))
            chunk["usage"] = {"prompt_tokens": prompt, "completion_tokens": completion,
                              "total_tokens": prompt + completion}  # fmt: skip
            return chunk
        return None  # ping, content_block_stop; message_stop ends the stream (read_events)

    def _start(self, index: int, block: dict[str, Any]) -> dict[str, Any] | None:
        kind = block.get("type")
        if kind == "tool_use":
            at = self._calls[index] = len(self._calls)
            given = block.get("input")
            arguments = json.dumps(given) if isinstance(given, dict) and given else ""
            call = {"index": at, "id": block.get("id") or "", "type": "function",
                    "function": {"name": block.get("name") or "", "arguments": arguments}}  # fmt: skip
            return _piece({"tool_calls": [call]})
        if kind == "text" and block.get("text"):
            return _piece({"content": block["text"]})
        if kind == "thinking" and block.get("thinking"):
            return _piece({"reasoning_content": block["thinking"]})
        return None

    def _delta(self, index: int, delta: dict[str, Any]) -> dict[str, Any] | None:
        kind = delta.get("type")
        if kind == "text_delta":
            return _piece({"content": delta.get("text") or ""})
        if kind == "thinking_delta":
            return _piece({"reasoning_content": delta.get("thinking") or ""})
        if kind == "input_json_delta" and index in self._calls:
            arguments = delta.get("partial_json") or ""
            return _piece({"tool_calls": [{"index": self._calls[index], "function": {"arguments": arguments}}]})
        return None  # signature_delta, citations_delta


def parse_message(data: Any) -> Completion:
    """A whole message (a server that ignored "stream") as a chat completion."""
    if not isinstance(data, dict) or not isinstance(data.get("content"), list):
        raise ModelServerFailed("model server sent a message without content")
    texts, thoughts, calls = [], [], []
    for block in data["content"]:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(str(block.get("text") or ""))
        elif kind == "thinking":
            thoughts.append(str(block.get("thinking") or ""))
        elif kind == "tool_use":
            calls.append({"id": block.get("id") or "", "type": "function",
                          "function": {"name": block.get("name") or "", "arguments": json.dumps(block.get("input")
                                                                                               or {})}})  # fmt: skip
    reason = data.get("stop_reason")
    choice: dict[str, Any] = {"index": 0, "content": "".join(texts), "finish_reason": FINISH.get(reason, "stop")}
    if calls:
        choice["tool_calls"] = calls
    if thoughts:
        choice["reasoning_content"] = "".join(thoughts)
    if isinstance(data.get("stop_sequence"), str):
        choice["stop_reason"] = data["stop_sequence"]
    used = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    prompt, completion = int(used.get("input_tokens") or 0), int(used.get("output_tokens") or 0)
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    return Completion(choices=[choice], model=data.get("model"), usage=usage)
