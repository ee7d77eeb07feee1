"""The state of a model's servers as every process reads it: the pool in Redis that
workers keep (tasks/model/servers.py) shown for /scaling, /metrics and /ready."""

from __future__ import annotations

from typing import Any

from shared.registry import Model

STATES = ("healthy", "draining", "down")
# A waiter's score in a model's line for a server slot (`Keys.server_waiting`): (9 - its
# priority) steps of this, plus the millisecond it was accepted; the most urgent first,
# then the oldest (the slot scripts' BAND, shared/contract/scripts.py).
PRIORITY_STEP = 1e13


def line_priorities() -> list[tuple[int, float, float]]:
    """Each priority (9 to 0) and the scores of its waiters in a server line: from, below."""
    return [
        (priority, (9 - priority) * PRIORITY_STEP, (10 - priority) * PRIORITY_STEP) for priority in range(9, -1, -1)
    ]


def servers_state(model: Model, raw: dict[Any, Any] | None = None) -> list[dict[str, Any]]:
    """Each server of `model` as /scaling shows it, from its pool's hash (`raw`, as
    HGETALL reads it): state (healthy, draining, down), slots, busy, failures in a
    row and in all, jobs served, why it last failed."""
    fields = {_text(k): _text(v) for k, v in (raw or {}).items()}
    shown = []
    for server in model.servers:
        slots = int(fields.get(f"{server.name}|slots") or server.slots)
        free = int(fields.get(f"{server.name}|free") or slots)
        busy = max(0, slots - free)
        state = fields.get(f"{server.name}|state") or "up"
        shown.append(
            {
                "name": server.name,
                "state": "healthy" if state == "up" else ("draining" if busy else "down"),
                "slots": slots,
                "busy": busy,
                "failures_in_a_row": int(fields.get(f"{server.name}|fails") or 0),
                "failures": int(fields.get(f"{server.name}|failures") or 0),
                "jobs": int(fields.get(f"{server.name}|jobs") or 0),
                "since": float(fields[f"{server.name}|since"]) / 1000 if fields.get(f"{server.name}|since") else None,
                "last_failure": fields.get(f"{server.name}|why") or None,
                "labels": dict(server.labels),
            }
        )
    return shown


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
