"""The official ``anthropic`` SDK pointed at a running gateway, validating every answer
and stream event strictly against its own types."""

from __future__ import annotations

from typing import Any

import anthropic


def client(stack: Any, key: str = "not-needed", **options: Any) -> anthropic.Anthropic:
    # Strict: every answer must validate against the SDK's own types, field for field.
    settings: dict[str, Any] = {"max_retries": 0, "timeout": 30, **options}
    return anthropic.Anthropic(base_url=stack.url, api_key=key, _strict_response_validation=True, **settings)
