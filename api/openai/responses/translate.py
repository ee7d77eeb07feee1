"""Responses and chat completions, both ways: a response's input items made the
messages of a chat job (what every model server serves), and the job's answer made a
response's output items, whole or as the Responses API's typed stream events.

What survives the translation: messages of every role (``developer`` as ``system``),
text and image parts, function calls and their outputs, function tools, tool_choice,
parallel_tool_calls, ``text.format`` (as ``response_format``), max_output_tokens,
temperature, top_p, user. Built-in tools (web search, file search, computer use, ...)
are refused: no model server runs them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from api.errors import InvalidInput
from api.openai.responses.types import IGNORED, InputTokensRequest, ResponsesRequest
from api.openai.types import sampling_temperature

# The output items are made as the worker makes them for a conversation (re-exported here).
from shared.contract.response_items import call_item as call_item
from shared.contract.response_items import item_id as item_id
from shared.contract.response_items import message_item as message_item
from shared.contract.response_items import output_items as output_items
from shared.contract.response_items import output_text as output_text

# Chat completions' fields a response's own are translated to: passed on beside them,
# they would override the translation and its limits (and the input items kept would
# not be what the model was asked). Each is refused, naming what to send instead.
TRANSLATED = {
    "messages": "the conversation is its input (and instructions)",
    "max_tokens": "its limit is max_output_tokens",
    "max_completion_tokens": "its limit is max_output_tokens",
    "response_format": "its format is text.format",
    "n": "a response is one answer",
    "stop": "a response has no stop words",
}

# finish_reason of the chat answer → the response's status and incomplete_details.
INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


# -- a request → a chat job -------------------------------------------------------


def given_input(body: ResponsesRequest | InputTokensRequest) -> str | list[dict[str, Any]]:
    """The request's `input` as sent: a string, or its items as dicts."""
    given = body.input if body.input is not None else []
    return given if isinstance(given, str) else [item.model_dump(by_alias=True) for item in given]


# Sampling parameters passed on as given (not fields of the request's model) that the
# response object repeats.
REPEATED_EXTRAS = ("presence_penalty", "frequency_penalty")


def asked_of(body: ResponsesRequest) -> dict[str, Any]:
    """What of the request the response object repeats."""
    asked = body.model_dump(
        include={"instructions", "tools", "tool_choice", "parallel_tool_calls", "text", "max_output_tokens",
                 "temperature", "top_p", "metadata", "store", "background", "previous_response_id", "user",
                 "safety_identifier", "prompt_cache_key"},
        exclude_none=True,
        by_alias=True,
    )  # fmt: skip
    extra = body.model_extra or {}
    for name in REPEATED_EXTRAS:
        value = extra.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            asked[name] = value
    return asked


def response_job(body: ResponsesRequest, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``llm.chat`` job of a response, its conversation `messages`."""
    tools = [tool.model_dump(exclude_none=True) for tool in body.tools or []]
    choice = body.tool_choice
    text = body.text.model_dump(by_alias=True, exclude_none=True) if body.text else None
    request: dict[str, Any] = {
        "messages": messages,
        "tools": chat_tools(tools),
        "tool_choice": chat_tool_choice(choice if isinstance(choice, str | None) else choice.model_dump()),
        "parallel_tool_calls": body.parallel_tool_calls,
        "response_format": response_format(text),
        "user": body.user,
    }
    passed = {k: v for k, v in (body.model_extra or {}).items() if k not in IGNORED}
    for name, instead in TRANSLATED.items():
        if name in passed:
            raise InvalidInput(f"{name}: not a field of /v1/responses: {instead}")
    meta = {
        **sampling_temperature(body.temperature),
        "tokens_limit": body.max_output_tokens,
        "stop_words": [],
        "model": body.model,
        "priority": body.priority,
        "sampling": {"top_p": body.top_p} if body.top_p is not None else {},
    }
    # What the gateway translated wins over anything passed on (refused above as well).
    sent = {**passed, **{k: v for k, v in request.items() if v is not None}}
    job = {"meta": meta, "openai": sent, "response": True}
    fallbacks = body.fallbacks_asked()
    return job if fallbacks is None else {**job, "fallbacks": fallbacks}


# -- input items → chat messages -------------------------------------------------


def input_items(raw: str | list[dict[str, Any]], response_id: str, field: str = "input") -> list[dict[str, Any]]:
    """The request's `input` (or a conversation's new items: `field`) as items, each with
    its id (a string is one user message); InvalidInput naming the item at fault."""
    if isinstance(raw, str):
        raw = [{"type": "message", "role": "user", "content": raw}]
    items = []
    for n, item in enumerate(raw):
        where = f"{field}[{n}]"
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "system", "developer", "assistant"):
                raise InvalidInput(f"{where}.role: one of user, system, developer, assistant")
            content = item.get("content")
            if isinstance(content, str):
                parts = [{"type": "output_text" if role == "assistant" else "input_text", "text": content}]
            elif isinstance(content, list):
                parts = [_part(part, f"{where}.content[{i}]") for i, part in enumerate(content)]
            else:
                raise InvalidInput(f"{where}.content: a string or a list of parts")
            entry = {"type": "message", "role": role, "content": parts}
            if role == "assistant":
                entry["status"] = "completed"
                entry["content"] = [{**p, "annotations": p.get("annotations", [])} for p in parts]
        elif kind == "function_call":
            for name in ("call_id", "name", "arguments"):
                if not isinstance(item.get(name), str):
                    raise InvalidInput(f"{where}.{name}: a string")
            entry = {"type": "function_call", "call_id": item["call_id"], "name": item["name"],
                     "arguments": item["arguments"], "status": "completed"}  # fmt: skip
        elif kind == "function_call_output":
            if not isinstance(item.get("call_id"), str):
                raise InvalidInput(f"{where}.call_id: a string")
            output = item.get("output")
            if not isinstance(output, str | list):
                raise InvalidInput(f"{where}.output: a string or a list of parts")
            entry = {"type": "function_call_output", "call_id": item["call_id"], "output": output,
                     "status": "completed"}  # fmt: skip
        elif kind == "compaction":
            if not isinstance(item.get("encrypted_content"), str):
                raise InvalidInput(f"{where}.encrypted_content: a string")
            # Kept sealed: opened (api/openai/responses/sealing.py) only as the model is asked.
            entry = {"type": "compaction", "encrypted_content": item["encrypted_content"]}
        elif kind == "item_reference":
            raise InvalidInput(f"{where}: item references are not served; send the item itself")
        else:
            raise InvalidInput(
                f"{where}.type: {kind!r} is not served (message, function_call, function_call_output, compaction)"
            )
        items.append({"id": item.get("id") if isinstance(item.get("id"), str) else item_id(response_id, "in", n),
                      **entry})  # fmt: skip
    return items


def _part(part: Any, where: str) -> dict[str, Any]:
    if not isinstance(part, dict) or not isinstance(part.get("type"), str):
        raise InvalidInput(f"{where}: a content part with its type")
    kind = part["type"]
    if kind in ("input_text", "output_text", "text"):
        if not isinstance(part.get("text"), str):
            raise InvalidInput(f"{where}.text: a string")
        return {"type": "output_text" if kind == "output_text" else "input_text", "text": part["text"]}
    if kind == "input_image":
        if not isinstance(part.get("image_url"), str):
            raise InvalidInput(f"{where}.image_url: a URL (file ids are not served)")
        return {"type": "input_image", "image_url": part["image_url"], "detail": part.get("detail", "auto")}
    raise InvalidInput(f"{where}.type: {kind!r} is not served (input_text, output_text, input_image)")


def chat_messages(instructions: str | None, items: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The chat messages of a conversation's items (after `instructions`, as a system message)."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": instructions}] if instructions else []
    for item in items:
        kind = item["type"]
        if kind == "message":
            role = "system" if item["role"] == "developer" else item["role"]
            messages.append({"role": role, "content": _chat_content(item["content"])})
        elif kind == "function_call":
            call = {"id": item["call_id"], "type": "function",
                    "function": {"name": item["name"], "arguments": item["arguments"]}}  # fmt: skip
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and last.get("tool_calls"):
                last["tool_calls"].append(call)  # calls made together: one assistant message
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item["output"]
            if not isinstance(output, str):
                output = "".join(p.get("text", "") for p in output if isinstance(p, dict))
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": output})
        elif kind == "compaction":
            # Opened before (CompactionSeal.expanded) where its tenant is known; a batch's line is not.
            raise InvalidInput("input: a compaction item is served by /v1/responses itself, not here")
    return messages


def _chat_content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    if all(part["type"] in ("input_text", "output_text") for part in parts):
        return "".join(part["text"] for part in parts)
    return [
        {"type": "text", "text": part["text"]}
        if part["type"] != "input_image"
        else {"type": "image_url", "image_url": {"url": part["image_url"]}}
        for part in parts
    ]


def chat_tools(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """Function tools as chat completions take them; built-in tools refused."""
    if not tools:
        return None
    out = []
    for n, tool in enumerate(tools):
        if tool.get("type") != "function":
            raise InvalidInput(f"tools[{n}].type: only function tools are served, not {tool.get('type')!r}")
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise InvalidInput(f"tools[{n}].name: a function's name")
        function = {key: tool[key] for key in ("name", "description", "parameters", "strict") if key in tool}
        function = {key: value for key, value in function.items() if value is not None}
        out.append({"type": "function", "function": function})
    return out


def chat_tool_choice(choice: Any) -> Any:
    if choice is None or isinstance(choice, str):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise InvalidInput("tool_choice: none, auto, required, or {type: function, name}")


def response_format(text: dict[str, Any] | None) -> dict[str, Any] | None:
    """``text.format`` as chat completions' ``response_format``."""
    form = (text or {}).get("format")
    if not form or form.get("type") == "text":
        return None
    if form.get("type") == "json_object":
        return {"type": "json_object"}
    if form.get("type") == "json_schema":
        if not isinstance(form.get("name"), str) or not isinstance(form.get("schema"), dict):
            raise InvalidInput("text.format: a json_schema format names its name and schema")
        schema = {key: form[key] for key in ("name", "schema", "strict", "description") if form.get(key) is not None}
        return {"type": "json_schema", "json_schema": schema}
    raise InvalidInput(f"text.format.type: text, json_object or json_schema, not {form.get('type')!r}")


# -- the answer → output items ---------------------------------------------------


def usage(answer: dict[str, Any]) -> dict[str, Any] | None:
    """The response's usage: the model server's; None when it told none (no count of
    zero tokens that was never made)."""
    used = answer.get("usage")
    if not isinstance(used, dict) or not ({"prompt_tokens", "completion_tokens"} & used.keys()):
        return None
    prompt, completion = int(used.get("prompt_tokens") or 0), int(used.get("completion_tokens") or 0)
    # The prompt's tokens the server read from its prefix cache, where it told them (as
    # the organization's usage and costs count them).
    details = used.get("prompt_tokens_details") if isinstance(used.get("prompt_tokens_details"), dict) else {}
    cached = min(prompt, int(details.get("cached_tokens") or 0))
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


def finished_status(answer: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
    """completed, or incomplete with its reason (the answer stopped at max_output_tokens)."""
    choice = (answer.get("choices") or [{}])[0]
    reason = INCOMPLETE.get(choice.get("finish_reason") or answer.get("finish_reason") or "")
    return ("incomplete", {"reason": reason}) if reason else ("completed", None)


def as_messages(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A response's output items as the conversation's next items (previous_response_id)."""
    return [item for item in items if item["type"] in ("message", "function_call")]


def conversation_after(record: dict[str, Any], answer: dict[str, Any]) -> list[dict[str, Any]]:
    """The conversation a finished response ended with: its history, its input, its output
    (what previous_response_id continues)."""
    return [*record["history"], *record["input_items"], *as_messages(output_items(record["id"], answer))]


def check_tool_outputs(history: list[dict[str, Any]], items: list[dict[str, Any]]) -> None:
    """Refuse a function_call_output answering no function call of the conversation before it
    (InvalidInput naming the item), as OpenAI does: a model server would be asked about a
    call it never made."""
    calls = {item["call_id"] for item in history if item["type"] == "function_call"}
    for n, item in enumerate(items):
        if item["type"] == "function_call":
            calls.add(item["call_id"])
        elif item["type"] == "function_call_output" and item["call_id"] not in calls:
            raise InvalidInput(
                f"input[{n}].call_id: no function call {item['call_id']!r} in the conversation before this output"
            )
