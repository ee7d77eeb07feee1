"""A server-sent event stream read as a client reads it, its connection dropped at will."""

from __future__ import annotations

import httpx


def read_events(
    url: str, body: dict, headers: dict[str, str], stop_after: int | None = None, timeout: float = 60
) -> list[tuple[int, str]]:
    """(id, data) of each event POSTing `body` to `url` streams back; with `stop_after`,
    the connection is dropped after that many."""
    got: list[tuple[int, str]] = []
    with httpx.stream("POST", url, json=body, headers=headers, timeout=timeout) as answer:
        assert answer.status_code == 200, answer.read()
        event: dict[str, str] = {}
        for line in answer.iter_lines():
            if line:
                name, _, value = line.partition(": ")
                event[name] = value
                continue
            got.append((int(event["id"]), event["data"]))
            event = {}
            if stop_after is not None and len(got) >= stop_after:
                break
    return got
