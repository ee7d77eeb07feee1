"""A batch's input file, read line by line as OpenAI reads it: each line a JSON object
``{"custom_id", "method": "POST", "url", "body"}``, its ``custom_id`` unique, its
``url`` an endpoint batches run, its ``body`` a request that endpoint takes (within
the deployment's limits, for a model it serves: no larger than ``MAX_BODY_BYTES``, read
as strictly as an interactive body, api/http/json_body.py). A file with bad lines is refused
whole, naming each line and what is wrong with it, before anything is queued.

Unlike OpenAI, one file may name several models: each line runs on its model's queue.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from api.errors import InvalidInput, InvalidJson
from api.http.json_body import loads
from api.jobs.admission import check_job, check_tokens
from api.limits import RequestModels
from api.openai.chat.serving import chat_job
from api.openai.completions.serving import completion_job
from api.openai.embeddings.serving import embedding_job, no_embedding_fallbacks
from api.openai.responses.translate import asked_of, chat_messages, given_input, input_items, response_job
from shared.config import Config
from shared.contract import TaskName
from shared.registry import Registry, UnknownModel

ENDPOINTS = {
    "/v1/chat/completions": TaskName.CHAT,
    "/v1/completions": TaskName.COMPLETE,
    "/v1/responses": TaskName.CHAT,
    "/v1/embeddings": TaskName.EMBED,
}
MAX_CUSTOM_ID = 512
MAX_REPORTED = 20  # lines named in one refusal


@dataclass(frozen=True)
class InputLine:
    """One request of a batch, as a job."""

    index: int  # 0-based, in the file's order of requests (blank lines skipped)
    number: int  # the line's number in the file (1-based), for messages
    custom_id: str
    url: str
    task: TaskName
    job: dict[str, Any]  # with meta.priority 0: below interactive traffic
    model: str | None
    # What the answer repeats of the request: a /v1/responses line's fields; an
    # embeddings line's encoding_format.
    asked: dict[str, Any] | None = None


@dataclass
class ReadInput:
    lines: list[InputLine]
    problems: list[tuple[int, str]]  # (line number, what is wrong)
    too_many: bool = False

    def refusal(self, limit: int) -> str:
        """What is wrong with the file, in one message."""
        if self.too_many:
            return f"the file holds more than {limit} requests (BATCH_MAX_LINES)"
        named = "; ".join(f"line {number}: {why}" for number, why in self.problems[:MAX_REPORTED])
        more = len(self.problems) - MAX_REPORTED
        tail = f"; and {more} more line(s)" if more > 0 else ""
        return f"the file has {len(self.problems)} invalid line(s): {named}{tail}"


def read_input(raw_lines: Iterable[bytes], config: Config, registry: Registry, models: RequestModels) -> ReadInput:
    """Every request of the file, or what is wrong with it."""
    read = ReadInput([], [])
    seen: set[str] = set()
    for number, raw in enumerate(raw_lines, start=1):
        if not raw.strip():
            continue
        if len(read.lines) + len(read.problems) >= config.batch_max_lines:
            read.too_many = True
            break
        try:
            line = _read_line(raw, number, len(read.lines), config, registry, models, seen)
        except _BadLine as bad:
            read.problems.append((number, str(bad)))
            continue
        read.lines.append(line)
    if not read.lines and not read.problems:
        read.problems.append((1, "the file holds no request"))
    return read


class _BadLine(Exception):
    pass


def _read_line(
    raw: bytes, number: int, index: int, config: Config, registry: Registry, models: RequestModels, seen: set[str]
) -> InputLine:
    if len(raw.rstrip(b"\r\n")) > config.max_body_bytes:
        raise _BadLine(f"{len(raw)} bytes; a request is at most {config.max_body_bytes} bytes (MAX_BODY_BYTES)")
    try:
        given = loads(raw, config.max_json_depth, where="")
    except InvalidJson as exc:
        raise _BadLine(str(exc)) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise _BadLine(f"not JSON ({exc})") from None
    if not isinstance(given, dict):
        raise _BadLine("not a JSON object")
    custom_id = given.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        raise _BadLine("custom_id: a non-empty string is required")
    if len(custom_id) > MAX_CUSTOM_ID:
        raise _BadLine(f"custom_id: at most {MAX_CUSTOM_ID} characters")
    if custom_id in seen:
        raise _BadLine(f"custom_id {custom_id!r} is used by an earlier line; each must be unique")
    seen.add(custom_id)
    if given.get("method") != "POST":
        raise _BadLine("method: must be 'POST'")
    url = given.get("url")
    task = ENDPOINTS.get(url) if isinstance(url, str) else None
    if task is None:
        raise _BadLine(f"url: must be one of {', '.join(ENDPOINTS)}")
    body = given.get("body")
    if not isinstance(body, dict):
        raise _BadLine("body: a JSON object is required")
    responses = url == "/v1/responses"
    kind = {"/v1/responses": models.responses, "/v1/embeddings": models.embeddings,
            "/v1/completions": models.openai_completion}.get(url, models.openai_chat)  # fmt: skip
    try:
        request = kind.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        raise _BadLine(f"body.{where}: {first.get('msg')}" if where else f"body: {first.get('msg')}") from None
    if getattr(request, "stream", False):
        raise _BadLine("body.stream: a batch's requests are not streamed")
    asked = None
    try:
        if responses:
            job, asked = _response_line(request)
        elif task == TaskName.EMBED:
            job, asked = embedding_job(request), {"encoding_format": request.encoding_format}
        else:
            job = chat_job(request) if task == TaskName.CHAT else completion_job(request)  # type: ignore[arg-type]
        job["meta"]["priority"] = 0
        check_tokens(config, getattr(request, "max_tokens", None), "max_tokens")
        check_tokens(config, getattr(request, "max_completion_tokens", None), "max_completion_tokens")
        check_job(config, job)
    except InvalidInput as exc:
        raise _BadLine(f"body: {exc}") from None
    model = job["meta"].get("model")
    # `registry` as the batch's tenant sees it: a model it may not use is an unknown one.
    # (With INNER_LLM_URL alone, every name is served, unless the tenant may not use it.)
    try:
        registry.route(model)
    except UnknownModel as exc:
        raise _BadLine(f"body.model: {exc}") from None
    for name in job.get("fallbacks") or []:
        try:
            registry.route(name)
        except UnknownModel as exc:
            raise _BadLine(f"body.fallbacks: {exc}") from None
    if task == TaskName.EMBED:
        try:
            job = no_embedding_fallbacks(job)
        except InvalidInput as exc:
            raise _BadLine(f"body.{exc}") from None
    return InputLine(index, number, custom_id, url, task, job, model, asked)  # type: ignore[arg-type]


def _response_line(request: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A /v1/responses line's job, and what its response repeats. A line is a response of
    its own: not in the background, and continuing no stored conversation."""
    if request.background:
        raise _BadLine("body.background: a batch's requests are run by the batch")
    if request.previous_response_id is not None:
        raise _BadLine("body.previous_response_id: a batch's line is a conversation of its own")
    if request.conversation is not None:
        raise _BadLine("body.conversation: a batch's line is a conversation of its own")
    items = input_items(given_input(request), "resp_line")
    return response_job(request, chat_messages(request.instructions, items)), asked_of(request)
