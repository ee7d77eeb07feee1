"""Fair sharing of a busy model (api/tenancy/fair_share.py): tenants' turns (`Turns`) by
weight, the most urgent job first, no burst for a tenant that was idle; the tenants those
of now, projects made and archived at runtime among them."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from api.jobs.queue import JobQueue
from api.tenancy.fair_share import FairShare, Turns, tenant_queue, weights_of
from api.tenancy.guard import load_tenants_of
from shared.tenants import Directory, Tenant
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


def test_a_tenant_that_joins_a_backlog_takes_turns_from_now_and_one_gone_is_forgotten() -> None:
    turns = Turns({"a": 1.0, "b": 1.0})
    for _ in range(40):
        turns.next({"a": 5, "b": 5})
    # A project made while a and b wait: its turns start now, it does not take the 20
    # turns each of the others had (nor wait for them to be repaid).
    turns.weigh({"a": 1.0, "b": 1.0, "proj_new": 1.0})
    taken = Counter(turns.next({"a": 5, "b": 5, "proj_new": 5}) for _ in range(30))
    assert taken == {"a": 10, "b": 10, "proj_new": 10}
    turns.weigh({"a": 3.0, "proj_new": 1.0})  # b gone, a's weight changed
    taken = Counter(turns.next({"a": 5, "proj_new": 5}) for _ in range(400))
    # 3 for 1 from the change on (the turn each had begun at the old weights aside).
    assert abs(taken["a"] - 300) <= 1 and taken.total() == 400


def projects(version: int, *names: str, archived: tuple[str, ...] = ()) -> Directory:
    """The control plane's projects as an API process holds them (weight 1, as made)."""
    return Directory(version, {name: Tenant(name) for name in names}, archived=frozenset(archived))


def test_projects_made_at_runtime_join_the_turns_and_archived_ones_leave() -> None:
    # No keys file: the default tenant alone, then the control plane's projects.
    settings = config(fair_share=True, queue_name="q", rabbit_mq_host="r", rabbit_mq_queue_type="quorum")
    tenants = load_tenants_of(settings)
    share = FairShare(settings, tenants, ["q"], FakeRedis())  # type: ignore[arg-type]
    queue = JobQueue(settings, share.tenant_queues)
    try:
        assert not share.enabled and share.tenant_queues == []  # one tenant: nothing to share
        assert not share.refresh(queue.add_queues)  # nothing changed: nothing read again
        tenants.runtime = projects(1, "proj_a")  # as control_sync replaces it
        assert share.refresh(queue.add_queues) and share.enabled
        assert share.tenant_queues == ["q.tenant.default", "q.tenant.proj_a"]
        # Each new tenant's queue, its bands, declared as the start's are: Celery's own for a
        # queue it does not know would be a classic queue, refused where a quorum one is.
        app = {name: q for name, q in queue.celery.amqp.queues.items()}
        for band in ("q.tenant.proj_a.high", "q.tenant.proj_a", "q.tenant.proj_a.low", "q.tenant.default.low"):
            assert app[band].queue_arguments == {"x-queue-type": "quorum"}, band
            assert app[band].exchange.name == band and app[band].durable
        # Routed to its queue only while the model is contended (read from Redis by run()).
        assert share.route("q", "proj_a") == "q"
        share._contended = {"q"}
        assert share.route("q", "proj_a") == "q.tenant.proj_a" and share.route("q", "default") == "q.tenant.default"
        assert share.route("q", "proj_unknown") == "q"
        tenants.runtime = projects(2, "proj_a", "proj_b")
        share.refresh(queue.add_queues)
        assert share.route("q", "proj_b") == "q.tenant.proj_b" and "q.tenant.proj_b.high" in queue.celery.amqp.queues
        # Archived: its jobs go nowhere new; its queue still maps to the model (the
        # lost-job sweep and the scaling signals read it).
        tenants.runtime = projects(3, "proj_a", "proj_b", archived=("proj_b",))
        share.refresh(queue.add_queues)
        assert share.route("q", "proj_b") == "q" and "q.tenant.proj_b" not in share.tenant_queues
        assert share.model_queue("q.tenant.proj_b") == "q" and share.model_queue("other.tenant.x") == "other.tenant.x"
        tenants.runtime = projects(4, "proj_a", "proj_b", archived=("proj_a", "proj_b"))
        share.refresh(queue.add_queues)
        assert not share.enabled and share.tenant_queues == [] and share.route("q", "default") == "q"
    finally:
        queue.close()


def test_fair_share_off_routes_no_project_to_a_queue_of_its_own() -> None:
    settings = config(fair_share=False, queue_name="q")
    tenants = load_tenants_of(settings)
    tenants.runtime = projects(1, "proj_a", "proj_b")
    share = FairShare(settings, tenants, ["q"], FakeRedis())  # type: ignore[arg-type]
    share._contended = {"q"}
    assert not share.enabled and share.tenant_queues == [] and share.route("q", "proj_a") == "q"


def test_a_keys_file_tenant_keeps_its_weight_beside_projects_and_a_project_of_its_name_changes_nothing(
    tmp_path: Path,
) -> None:
    keys = tmp_path / "tenants.yaml"
    keys.write_text("tenants:\n  - {name: heavy, keys: [h], weight: 3}\n")
    settings = config(api_keys_file=str(keys), fair_share=True, queue_name="q")
    tenants = load_tenants_of(settings)
    tenants.runtime = Directory(1, {"heavy": Tenant("heavy", 1.0), "proj_a": Tenant("proj_a")})
    assert weights_of(tenants) == {"default": 1.0, "heavy": 3.0, "proj_a": 1.0}
