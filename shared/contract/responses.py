"""A /v1/responses response's record (`Keys.response`), as the API writes it and its
worker writes it again when Redis lost it: JSON, kept RESPONSE_TTL seconds
(RESULT_TTL's when 0)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.config import Config


def record_ttl(config: Config) -> int:
    """Seconds a response's record is kept."""
    return config.response_ttl or config.result_ttl


def dump_record(record: dict[str, Any]) -> str:
    """A record as Redis keeps it."""
    return json.dumps(record)


def load_record(raw: str | bytes | None) -> dict[str, Any] | None:
    """A record as Redis kept it; None when there is none."""
    return json.loads(raw) if raw else None
