"""The official ``openai`` SDK pointed at a running gateway, with strict validation of
every answer, and the Batch API's steps as the tests take them."""

from __future__ import annotations

import io
import json
import time
from typing import Any

import openai

FINISHED = {"completed", "failed", "expired", "cancelled"}


def client(stack: Any) -> openai.OpenAI:
    # Strict: every answer must validate against the SDK's own types, field for field.
    return openai.OpenAI(
        base_url=f"{stack.url}/v1", api_key="not-needed", max_retries=0, timeout=30, _strict_response_validation=True
    )


def chat_line(custom_id: str, text: str, **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "fake-model", "messages": [{"role": "user", "content": text}], **body},
    }


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def upload(sdk: openai.OpenAI, lines: list[dict[str, Any]] | bytes, name: str = "input.jsonl") -> str:
    content = lines if isinstance(lines, bytes) else jsonl(lines)
    return sdk.files.create(file=(name, io.BytesIO(content)), purpose="batch").id


def wait_until_finished(sdk: openai.OpenAI, batch_id: str, timeout: float = 60) -> openai.types.Batch:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = sdk.batches.retrieve(batch_id)
        if batch.status in FINISHED:
            return batch
        time.sleep(0.2)
    raise AssertionError(f"batch {batch_id} not finished in {timeout}s: {batch.status} {batch.request_counts}")


def file_lines(sdk: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(line) for line in sdk.files.content(file_id).text.splitlines()]


def admin_client(url: str, admin_key: str) -> openai.OpenAI:
    """The SDK's admin client (``client.admin.organization...``) of the gateway at `url`,
    as an operator makes it: with an admin API key only, strict as `client`."""
    return openai.OpenAI(
        base_url=f"{url}/v1", admin_api_key=admin_key, max_retries=0, timeout=30, _strict_response_validation=True
    )
