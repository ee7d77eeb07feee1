"""Anthropic's Messages and chat completions, both ways: a message request made the chat
completions request every model server serves (an ``llm.chat`` job's), and the job's
answer made Anthropic's message (its stream: api/anthropic/messages/events.py).

What survives the translation (docs/anthropic.md says it for users):
- ``system`` (a string, or text blocks joined) as the first, system, message, with the
  text of any ``system`` message among the others (as Claude Code sends one) after it:
  most chat templates take a system message first and nowhere else (vLLM's own
  /v1/messages does the same);
- text blocks; images (base64 and URL) as ``image_url`` parts; documents: plain text and
  content documents as text (and image) parts, base64 PDFs as OpenAI's ``file`` part
  (a server that reads none refuses it); documents by URL or file id are refused;
- ``tool_use`` blocks as the assistant's ``tool_calls`` (``input`` as the arguments'
  JSON), ``tool_result`` blocks as ``tool`` messages (their images in a user message
  after them; ``is_error`` as an "Error: " before the text);
- a last ``assistant`` message as a prefill the answer continues (vLLM's
  ``continue_final_message``; llama.cpp continues one by itself);
- ``tools`` (a client's own: as functions, ``input_schema`` their parameters),
  ``tool_choice`` (auto, any as required, tool as the named function, none) and
  ``disable_parallel_tool_use`` (as ``parallel_tool_calls: false``);
- ``thinking`` as the chat template's switch (``chat_template_kwargs``: ``enable_thinking``,
  Qwen3's, and ``thinking``, DeepSeek's and Granite's), ``output_config.effort`` as
  ``reasoning_effort``, ``output_config.format`` as ``response_format``;
- ``metadata.user_id`` as ``user``, ``top_k`` as vLLM's and llama.cpp's own;
  ``max_tokens``, ``temperature``, ``top_p`` and ``stop_sequences`` in the job's meta.
Dropped: ``thinking`` and ``redacted_thinking`` blocks given back (a model server keeps
no signature to check), ``cache_control`` (the servers cache prefixes by themselves),
``citations``. A thinking budget is checked (less than max_tokens) and not passed on.

The answer: the reasoning (``reasoning_content``, of a server with a reasoning parser) as a
``thinking`` block, the text as a ``text`` block, each tool call as a ``tool_use`` block
(its arguments parsed), the finish reason as ``stop_reason`` (``stop_sequence`` where the
server names the stop string, as vLLM does), and the usage in Anthropic's terms.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from api.anthropic.messages.types import CountTokensRequest, MessageParam, MessagesRequest, ToolParam
from api.errors import InvalidInput
from api.openai.types import sampling_temperature

log = logging.getLogger(__name__)

# A chat answer's finish_reason as Anthropic's stop_reason.
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use",
                "content_filter": "refusal"}  # fmt: skip
# output_config.effort as the reasoning_effort servers take (vLLM's: low, medium, high).
EFFORTS = {"low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"}
# Claude Code's first system block: a per-request hash that no model needs and that
# would make every request's prompt differ from its first characters on (no server's
# prefix cache, nor the gateway's prefix affinity, would ever find it again).
BILLING_HEADER = "x-anthropic-billing-header"


# -- a request → a chat job -------------------------------------------------------


def messages_job(body: MessagesRequest) -> dict[str, Any]:
    """The ``llm.chat`` job of a message request."""
    thinking = body.thinking
    if thinking is not None and thinking.type == "enabled" and thinking.budget_tokens >= body.max_tokens:
        raise InvalidInput(
            f"thinking.budget_tokens: {thinking.budget_tokens}; it must be less than max_tokens ({body.max_tokens})"
        )
    request = chat_request(body)
    if body.metadata is not None and body.metadata.user_id:
        request["user"] = body.metadata.user_id
    if body.top_k is not None:
        request["top_k"] = body.top_k
    if body.output_config is not None:
        form = body.output_config.format
        request.update(_output(body.output_config.effort, form.schema_ if form is not None else None))
    meta = {
        **sampling_temperature(body.temperature),
        "tokens_limit": body.max_tokens,
        "stop_words": list(body.stop_sequences or []),
        "model": body.model,
        "priority": body.priority,
        "sampling": {"top_p": body.top_p} if body.top_p is not None else {},
    }
    return {"meta": meta, "openai": request}


def as_given(body: MessagesRequest) -> dict[str, Any]:
    """The request as its client gave it (Anthropic's fields the gateway knows; not its
    model and stream, which the worker sets), for a server that serves /v1/messages itself."""
    return body.model_dump(exclude={"model", "stream", "priority"}, exclude_none=True, by_alias=True)


def chat_request(body: MessagesRequest | CountTokensRequest) -> dict[str, Any]:
    """The chat completions request of what `body`'s prompt is made of: its messages,
    tools, tool choice and thinking (what the job's meta carries apart: model,
    max_tokens, temperature, top_p, stop)."""
    messages = chat_messages(body.system, body.messages)
    request: dict[str, Any] = {"messages": messages}
    last = messages[-1]
    if last["role"] == "assistant" and not last.get("tool_calls"):
        # A prefill: the answer continues it (vLLM's fields; llama.cpp does so by itself).
        request.update(continue_final_message=True, add_generation_prompt=False)
    tools = chat_tools(body.tools)
    if tools:
        request["tools"] = tools
        request.update(_tool_choice(body.tool_choice))
    kwargs = dict(body.chat_template_kwargs or {})
    if body.thinking is not None:
        on = body.thinking.type != "disabled"
        # Qwen3's templates read enable_thinking; DeepSeek's and Granite's, thinking. The
        # client's own chat_template_kwargs win.
        kwargs = {"enable_thinking": on, "thinking": on, **kwargs}
    if kwargs:
        request["chat_template_kwargs"] = kwargs
    return request


def chat_messages(system: str | list[dict[str, Any]] | None, messages: list[MessageParam]) -> list[dict[str, Any]]:
    """The chat messages of a system prompt and Anthropic's messages; InvalidInput naming
    the block at fault."""
    chat: list[dict[str, Any]] = []
    prompts = [_system(system, "system")]
    for n, message in enumerate(messages):
        where = f"messages.{n}.content"
        if message.role == "system":
            prompts.append(_system(message.content, where))
        elif isinstance(message.content, str):
            chat.append({"role": message.role, "content": message.content})
        elif message.role == "user":
            chat += _user_turn(message.content, where)
        else:
            chat.append(_assistant_turn(message.content, where))
    if not chat:
        raise InvalidInput("messages: at least one user or assistant message")
    said = "\n\n".join(prompt for prompt in prompts if prompt)
    return [{"role": "system", "content": said}, *chat] if said else chat


def _system(system: str | list[dict[str, Any]] | None, where: str) -> str:
    if system is None or isinstance(system, str):
        return system or ""
    texts = []
    for n, block in enumerate(system):
        text = _text_of(block, f"{where}.{n}")
        if not text.startswith(BILLING_HEADER):
            texts.append(text)
    return "\n\n".join(texts)


def _text_of(block: Any, where: str) -> str:
    if not isinstance(block, dict) or block.get("type") != "text":
        raise InvalidInput(f"{where}.type: a text block")
    if not isinstance(block.get("text"), str):
        raise InvalidInput(f"{where}.text: a string")
    return str(block["text"])


def _kind(block: Any, where: str) -> str:
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        raise InvalidInput(f"{where}: a content block with its type")
    return str(block["type"])


def _user_turn(blocks: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    """A user's blocks as chat messages: a tool message per tool_result (first: they
    answer the assistant's calls just before), then the rest as one user message."""
    tools: list[dict[str, Any]] = []
    images: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for n, block in enumerate(blocks):
        at = f"{where}.{n}"
        kind = _kind(block, at)
        if kind == "tool_result":
            message, pictures = _tool_result(block, at)
            tools.append(message)
            images += pictures
        elif kind == "tool_use":
            raise InvalidInput(f"{at}.type: tool_use blocks are the assistant's; the user's answer is tool_result")
        elif kind not in ("thinking", "redacted_thinking"):
            parts += _parts(block, kind, at)
    rest = images + parts
    return tools + ([{"role": "user", "content": _content(rest)}] if rest or not tools else [])


def _assistant_turn(blocks: list[dict[str, Any]], where: str) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for n, block in enumerate(blocks):
        at = f"{where}.{n}"
        kind = _kind(block, at)
        if kind == "text":
            texts.append(_text_of(block, at))
        elif kind == "tool_use":
            calls.append(_tool_call(block, at))
        elif kind == "tool_result":
            raise InvalidInput(f"{at}.type: tool_result blocks are the user's")
        elif kind not in ("thinking", "redacted_thinking"):
            raise InvalidInput(f"{at}.type: an assistant's blocks are text, tool_use and thinking, not {kind!r}")
    message: dict[str, Any] = {"role": "assistant", "content": "\n".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    return message


def _tool_call(block: dict[str, Any], where: str) -> dict[str, Any]:
    for name in ("id", "name"):
        if not isinstance(block.get(name), str) or not block[name]:
            raise InvalidInput(f"{where}.{name}: a string")
    given = block.get("input", {})
    if not isinstance(given, dict):
        raise InvalidInput(f"{where}.input: an object")
    arguments = json.dumps(given, ensure_ascii=False)
    return {"id": block["id"], "type": "function", "function": {"name": block["name"], "arguments": arguments}}


def _tool_result(block: dict[str, Any], where: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A tool_result as a tool message, and its images (a tool message holds text alone)."""
    if not isinstance(block.get("tool_use_id"), str) or not block["tool_use_id"]:
        raise InvalidInput(f"{where}.tool_use_id: the id of the tool_use it answers")
    given = block.get("content", "")
    texts: list[str] = []
    images: list[dict[str, Any]] = []
    if isinstance(given, str):
        texts.append(given)
    elif isinstance(given, list):
        for n, part in enumerate(given):
            at = f"{where}.content.{n}"
            for piece in _parts(part, _kind(part, at), at):
                if piece["type"] == "text":
                    texts.append(piece["text"])
                else:
                    images.append(piece)
    elif given is not None:
        raise InvalidInput(f"{where}.content: a string or a list of blocks")
    text = "\n".join(texts)
    if block.get("is_error") is True:
        text = f"Error: {text}"
    return {"role": "tool", "tool_call_id": block["tool_use_id"], "content": text}, images


def _parts(block: dict[str, Any], kind: str, where: str) -> list[dict[str, Any]]:
    """A user's content block as chat content parts."""
    if kind == "text":
        return [{"type": "text", "text": _text_of(block, where)}]
    if kind == "image":
        return [{"type": "image_url", "image_url": {"url": _image_url(block.get("source"), f"{where}.source")}}]
    if kind == "document":
        return _document(block, where)
    raise InvalidInput(f"{where}.type: {kind!r} is not served (text, image, document, tool_result)")


def _image_url(source: Any, where: str) -> str:
    if not isinstance(source, dict):
        raise InvalidInput(f"{where}: an image's source (base64 or url)")
    kind = source.get("type")
    if kind == "url":
        if not isinstance(source.get("url"), str) or not source["url"]:
            raise InvalidInput(f"{where}.url: a URL")
        return str(source["url"])
    if kind == "base64":
        return _data_url(source, where)
    raise InvalidInput(f"{where}.type: base64 or url (file ids are not served)")


def _data_url(source: dict[str, Any], where: str) -> str:
    for name in ("media_type", "data"):
        if not isinstance(source.get(name), str) or not source[name]:
            raise InvalidInput(f"{where}.{name}: a string")
    return f"data:{source['media_type']};base64,{source['data']}"


def _document(block: dict[str, Any], where: str) -> list[dict[str, Any]]:
    source = block.get("source")
    at = f"{where}.source"
    if not isinstance(source, dict):
        raise InvalidInput(f"{at}: a document's source (text, content or base64)")
    title = block.get("title") if isinstance(block.get("title"), str) else None
    heading = [{"type": "text", "text": title}] if title else []
    kind = source.get("type")
    if kind == "text":
        if not isinstance(source.get("data"), str):
            raise InvalidInput(f"{at}.data: the document's text")
        return [*heading, {"type": "text", "text": source["data"]}]
    if kind == "content":
        given = source.get("content")
        if isinstance(given, str):
            return [*heading, {"type": "text", "text": given}]
        if not isinstance(given, list):
            raise InvalidInput(f"{at}.content: a string or a list of text and image blocks")
        parts = []
        for n, part in enumerate(given):
            inner = f"{at}.content.{n}"
            kind_of = _kind(part, inner)
            if kind_of not in ("text", "image"):
                raise InvalidInput(f"{inner}.type: a document's content is text and image blocks")
            parts += _parts(part, kind_of, inner)
        return [*heading, *parts]
    if kind == "base64":
        file = {"filename": title or "document.pdf", "file_data": _data_url(source, at)}
        return [{"type": "file", "file": file}]
    raise InvalidInput(f"{at}.type: text, content or base64 (documents by URL or file id are not served)")


def _content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """Text parts alone as one string (as vLLM joins them); with images or files, the parts."""
    if all(part["type"] == "text" for part in parts):
        return "\n".join(part["text"] for part in parts)
    return parts


def chat_tools(tools: list[ToolParam] | None) -> list[dict[str, Any]]:
    """A client's tools as chat completions' functions; Anthropic's server tools refused."""
    out = []
    for n, tool in enumerate(tools or []):
        if tool.type not in (None, "custom"):
            raise InvalidInput(
                f"tools.{n}.type: {tool.type!r} is one of Anthropic's server tools, which no model server here runs"
            )
        if tool.input_schema is None:
            raise InvalidInput(f"tools.{n}.input_schema: a tool's input, as a JSON Schema")
        function: dict[str, Any] = {"name": tool.name, "parameters": tool.input_schema}
        if tool.description is not None:
            function["description"] = tool.description
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: Any) -> dict[str, Any]:
    if choice is None:
        return {}
    if choice.type == "tool":
        said: dict[str, Any] = {"tool_choice": {"type": "function", "function": {"name": choice.name}}}
    else:
        said = {"tool_choice": {"auto": "auto", "any": "required", "none": "none"}[choice.type]}
    if getattr(choice, "disable_parallel_tool_use", None):
        said["parallel_tool_calls"] = False
    return said


def _output(effort: str | None, schema: dict[str, Any] | None) -> dict[str, Any]:
    said: dict[str, Any] = {}
    if effort is not None:
        said["reasoning_effort"] = EFFORTS[effort]
    if schema is not None:
        said["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}
    return said


# -- the answer → Anthropic's message --------------------------------------------


def message_id(job_id: str) -> str:
    """The message's id: its job's, as Anthropic spells ids."""
    return f"msg_{job_id}"


def tool_use_id(job_id: str, n: int) -> str:
    """The id of a tool call the server named none (the same on every read)."""
    return f"toolu_{job_id}_{n}"


def first_choice(answer: dict[str, Any]) -> dict[str, Any]:
    choices = answer.get("choices") or [
        {"index": 0, "content": answer.get("content", ""), "finish_reason": answer.get("finish_reason")}
    ]
    return dict(choices[0])


def message_object(job_id: str, answer: dict[str, Any], model: str, stop_sequences: list[str] | None) -> dict[str, Any]:
    """A finished chat answer as Anthropic's message."""
    choice = first_choice(answer)
    reason, sequence = stop_reason(choice, stop_sequences)
    return {
        "id": message_id(job_id),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content_blocks(job_id, choice),
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": usage(answer),
    }


def content_blocks(job_id: str, choice: dict[str, Any]) -> list[dict[str, Any]]:
    """A chat answer's choice as content blocks: thinking, text, tool uses."""
    blocks: list[dict[str, Any]] = []
    reasoning = choice.get("reasoning_content") or ""
    if reasoning:
        blocks.append(thinking_block(reasoning))
    text = choice.get("content") or ""
    calls = choice.get("tool_calls") or []
    if text or not (calls or reasoning):
        blocks.append({"type": "text", "text": text})
    for n, call in enumerate(calls):
        function = call.get("function") or {}
        blocks.append(tool_use_block(call.get("id") or tool_use_id(job_id, n), function.get("name") or "",
                                     tool_input(function.get("arguments"))))  # fmt: skip
    return blocks


def thinking_block(thinking: str) -> dict[str, Any]:
    # No signature: a model server signs nothing (one given back is dropped, never checked).
    return {"type": "thinking", "thinking": thinking, "signature": ""}


def tool_use_block(id_: str, name: str, given: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": id_, "name": name, "input": given}


def tool_input(arguments: Any) -> dict[str, Any]:
    """A call's arguments (JSON text) as a tool_use's input: an object; {} for arguments
    that are none, or not a JSON object (the model's mistake, logged)."""
    if isinstance(arguments, dict):
        return arguments
    if not isinstance(arguments, str) or not arguments.strip():
        return {}
    try:
        parsed = json.loads(arguments)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        log.info("a tool call's arguments are not a JSON object: %.200s", arguments)
        return {}
    return parsed


def stop_reason(choice: dict[str, Any], stop_sequences: list[str] | None) -> tuple[str, str | None]:
    """Anthropic's stop_reason and stop_sequence of a chat answer's choice."""
    finish = choice.get("finish_reason")
    if choice.get("tool_calls") and finish in (None, "stop", "tool_calls"):
        return "tool_use", None
    if finish in (None, "stop"):
        said = choice.get("stop_reason")
        if isinstance(said, str) and said in (stop_sequences or []):
            return "stop_sequence", said
        return "end_turn", None
    return STOP_REASONS.get(str(finish), "end_turn"), None


def usage(answer: dict[str, Any]) -> dict[str, Any]:
    """The answer's usage in Anthropic's terms: the tokens a server read from its prefix
    cache (``prompt_tokens_details.cached_tokens``, where it tells) as cache reads, apart
    from the input's others; 0 for what the server did not count."""
    used = answer.get("usage") if isinstance(answer.get("usage"), dict) else {}
    prompt = int(used.get("prompt_tokens") or 0)
    details = used.get("prompt_tokens_details") if isinstance(used.get("prompt_tokens_details"), dict) else {}
    cached = min(prompt, int(details.get("cached_tokens") or 0))
    return {
        "input_tokens": prompt - cached,
        "output_tokens": int(used.get("completion_tokens") or 0),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    }
