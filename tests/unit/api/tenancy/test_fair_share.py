"""Fair sharing of a busy model (api/tenancy/fair_share.py): tenants' turns (`Turns`) by
weight, the most urgent job first, no burst for a tenant that was idle."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from api.tenancy.fair_share import FairShare, Turns, tenant_queue
from api.tenancy.guard import load_tenants_of
from tests.unit.api.edge import FakeRedis, config

pytestmark = pytest.mark.unit


def test_backlogged_tenants_take_turns_by_weight() -> None:
    turns = Turns({"heavy": 3.0, "light": 1.0})
    taken = Counter(turns.next({"heavy": 5, "light": 5}) for _ in range(400))
    assert taken == {"heavy": 300, "light": 100}


def test_turns_interleave_rather_than_come_in_runs() -> None:
    turns = Turns({"a": 1.0, "b": 1.0})
    order = [turns.next({"a": 5, "b": 5}) for _ in range(8)]
    assert order == ["a", "b"] * 4


def test_a_more_urgent_job_goes_first_whatever_the_shares() -> None:
    turns = Turns({"heavy": 3.0, "light": 1.0})
    for _ in range(10):
        turns.next({"heavy": 5, "light": 5})
    assert turns.next({"heavy": 5, "light": 9}) == "light"
    assert turns.next({"heavy": 0, "light": 1}) == "light"


def test_a_tenant_that_was_idle_gets_its_share_from_now_not_the_turns_it_missed() -> None:
    turns = Turns({"busy": 1.0, "idle": 1.0})
    for _ in range(50):
        assert turns.next({"busy": 5}) == "busy"
    turns.waits("idle")
    order = [turns.next({"busy": 5, "idle": 5}) for _ in range(6)]
    assert Counter(order) == {"busy": 3, "idle": 3}


def test_tenants_queues_exist_only_where_several_tenants_share_a_model(tmp_path: Path) -> None:
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text("tenants:\n  - {name: heavy, keys: [h], weight: 3}\n  - {name: light, keys: [l]}\n")
    settings = config(api_keys_file=str(tenants), fair_share=True, queue_name="q")
    share = FairShare(settings, load_tenants_of(settings), ["q"], FakeRedis())  # type: ignore[arg-type]
    assert share.enabled and share.tenant_queues == ["q.tenant.default", "q.tenant.heavy", "q.tenant.light"]
    assert share.route("q", "heavy") == "q" and not share.held_back("q")  # not contended: the model's queue
    assert share.model_queue("q.tenant.light") == "q" and share.model_queue("q") == "q"
    assert tenant_queue("q", "heavy") == "q.tenant.heavy"
    alone = FairShare(config(fair_share=True), load_tenants_of(config()), ["q"], FakeRedis())  # type: ignore[arg-type]
    assert not alone.enabled and alone.tenant_queues == []  # one tenant: nothing to share
