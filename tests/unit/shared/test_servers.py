"""The state of a model's servers, as /scaling, /metrics and /ready show it from the pool's hash."""

from __future__ import annotations

import itertools
import json

import pytest

from shared.config import Config
from shared.registry import DEFAULT_SLOTS, load_registry
from shared.servers import PRIORITY_STEP, line_priorities, servers_state

pytestmark = pytest.mark.unit


def test_a_servers_state_as_scaling_shows_it() -> None:
    servers = [{"url": "a:1", "slots": 4}, {"url": "b:1", "slots": 2}, {"url": "c:1"}]
    config = Config(_env_file=None, models=json.dumps({"models": [{"name": "m", "servers": servers}]}))  # type: ignore[call-arg]
    model = load_registry(config).default
    raw = {
        b"a:1|slots": b"4", b"a:1|free": b"1", b"a:1|state": b"up", b"a:1|jobs": b"10",
        b"b:1|slots": b"2", b"b:1|free": b"1", b"b:1|state": b"down", b"b:1|fails": b"3", b"b:1|failures": b"5",
        b"b:1|why": b"refused",
    }  # fmt: skip
    a, b, c = servers_state(model, raw)
    assert (a["state"], a["busy"], a["jobs"]) == ("healthy", 3, 10)
    assert (b["state"], b["busy"], b["failures_in_a_row"], b["last_failure"]) == ("draining", 1, 3, "refused")
    assert (c["state"], c["slots"], c["busy"]) == ("healthy", DEFAULT_SLOTS, 0)  # no worker has used it yet
    raw[b"b:1|free"] = b"2"
    assert servers_state(model, raw)[1]["state"] == "down"


def test_each_priority_has_its_own_scores_in_a_server_line_the_most_urgent_lowest() -> None:
    ranges = line_priorities()
    assert [priority for priority, _, _ in ranges] == list(range(9, -1, -1))
    assert ranges[0][1] == 0 and all(a[2] == b[1] for a, b in itertools.pairwise(ranges))
    # A waiter of priority 4 accepted now scores within its priority's range, whatever the millisecond.
    score = (9 - 4) * PRIORITY_STEP + 1_796_000_000_000
    assert [p for p, low, high in ranges if low <= score < high] == [4]
