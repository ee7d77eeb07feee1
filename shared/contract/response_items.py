"""A /v1/responses response's output items, made from its job's finished answer: what
the API answers (the response object, its stream's last events) and what the worker
adds to the response's conversation (/v1/conversations) as the job ends. One
definition for both sides, so a conversation holds the items the response showed."""

from __future__ import annotations

from typing import Any


def item_id(response_id: str, kind: str, n: int) -> str:
    """The id of a response's `n`th item of `kind` (msg, fc, in): the same on every read."""
    return f"{kind}_{response_id.removeprefix('resp_')}_{n}"


def output_items(response_id: str, answer: dict[str, Any], status: str = "completed") -> list[dict[str, Any]]:
    """A finished chat answer (choice 0) as a response's output: its message, then its calls."""
    choice = (answer.get("choices") or [{"content": answer.get("content", ""), "index": 0}])[0]
    items: list[dict[str, Any]] = []
    text = choice.get("content") or ""
    calls = choice.get("tool_calls") or []
    if text or not calls:
        items.append(message_item(item_id(response_id, "msg", 0), text, status))
    for n, call in enumerate(calls):
        function = call.get("function") or {}
        items.append(call_item(item_id(response_id, "fc", n), call.get("id") or item_id(response_id, "call", n),
                               function.get("name", ""), function.get("arguments") or "", "completed"))  # fmt: skip
    return items


def message_item(id_: str, text: str | None, status: str) -> dict[str, Any]:
    content = [] if text is None else [output_text(text)]
    return {"id": id_, "type": "message", "status": status, "role": "assistant", "content": content}


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def call_item(id_: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {"id": id_, "type": "function_call", "status": status, "call_id": call_id, "name": name,
            "arguments": arguments}  # fmt: skip
