"""The control plane's store on a SQLite file: each change a new version with its audit
event; what API processes hold (the directory) is the live keys only; pages and filters."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from shared.control.database import engine_for, migrate
from shared.control.models import AuditEvent, ProjectKey, UsageBucket
from shared.control.store import Actor, Archived, AuditFilter, ControlStore, Missing, Page
from shared.tenants import ModelLimits, digest

pytestmark = pytest.mark.unit

ADMIN = Actor("key_cfg_0123456789abcdef", "ADMIN_API_KEYS key_cfg_0123456789abcdef")


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Iterator[ControlStore]:
    engine = engine_for(f"sqlite:///{tmp_path}/control.db")
    migrate(engine)
    yield ControlStore(engine, clock)
    engine.dispose()


def test_each_change_is_one_version_more_and_reads_are_none(store: ControlStore) -> None:
    assert store.version() == 0
    project = store.create_project(ADMIN, "one")
    assert store.version() == 1
    store.projects(None, 10, False)
    store.project(project.id)
    store.audit_events(AuditFilter(), 10)
    assert store.version() == 1
    store.rename_project(ADMIN, project.id, "two")
    store.create_service_account(ADMIN, project.id, "bot", True, None)
    assert store.version() == 3
    with pytest.raises(Missing):
        store.rename_project(ADMIN, "proj_missing", "x")
    assert store.version() == 3  # a change that failed is no change


def test_the_directory_holds_the_live_keys_of_active_projects_only(store: ControlStore, clock: Clock) -> None:
    project = store.create_project(ADMIN, "p")
    live = store.create_service_account(ADMIN, project.id, "live", True, None)
    expiring = store.create_service_account(ADMIN, project.id, "expiring", True, 60)
    deleted = store.create_service_account(ADMIN, project.id, "deleted", True, None)
    assert live.key and live.value and expiring.key and expiring.value and deleted.key and deleted.value
    store.delete_key(ADMIN, project.id, deleted.key.id)
    admin_key, admin_value = store.create_admin_key(ADMIN, "ops", None)

    directory = store.directory(max_priority=7)
    assert directory.version == store.version()
    assert set(directory.keys) == {digest(live.value), digest(expiring.value)}
    grant = directory.keys[digest(expiring.value)]
    assert grant.tenant.name == project.id and grant.key_id == expiring.key.id
    assert grant.expires_at == clock.now + 60 and grant.live(clock.now) and not grant.live(clock.now + 60)
    tenant = directory.projects[project.id]
    assert tenant.weight == 1 and not tenant.admin and tenant.quotas.max_priority == 7
    assert tenant.quotas.tokens_per_minute is None and tenant.quotas.jobs_in_flight is None
    assert directory.admin_keys[digest(admin_value)].key_id == admin_key.id

    clock.now += 61  # the expired key is not read again
    assert set(store.directory(7).keys) == {digest(live.value)}
    store.archive_project(ADMIN, project.id)
    archived = store.directory(7)
    assert archived.keys == {} and project.id in archived.projects  # its jobs are still its own
    store.delete_admin_key(ADMIN, admin_key.id)
    assert store.directory(7).admin_keys == {}


def test_a_key_is_kept_as_its_digest_and_the_audit_log_never_holds_it(store: ControlStore) -> None:
    project = store.create_project(ADMIN, "p")
    made = store.create_service_account(ADMIN, project.id, "bot", True, 3600)
    another_key, another = store.create_key(ADMIN, project.id, made.account.id, None, None)
    admin_key, admin_value = store.create_admin_key(ADMIN, "ops", None)
    store.delete_service_account(ADMIN, project.id, made.account.id)
    assert made.value and made.key
    with store.engine.connect() as connection:
        kept = connection.execute(select(ProjectKey.digest, ProjectKey.redacted_value)).all()
        assert kept == [(digest(made.value), made.key.redacted_value), (digest(another), another_key.redacted_value)]
        events = connection.execute(select(AuditEvent)).all()
    text = json.dumps([list(map(str, event)) for event in events])
    for secret in (made.value, another, admin_value):
        assert secret not in text and digest(secret).hex() not in text
    assert admin_key.name == "ops"


def test_deleting_a_service_account_deletes_its_keys_each_one_audited(store: ControlStore) -> None:
    project = store.create_project(ADMIN, "p")
    made = store.create_service_account(ADMIN, project.id, "bot", True, None)
    second, _ = store.create_key(ADMIN, project.id, made.account.id, "second", None)
    store.delete_service_account(ADMIN, project.id, made.account.id)
    assert store.directory(5).keys == {}
    with pytest.raises(Missing):
        store.service_account(project.id, made.account.id)
    _, page, _ = store.keys(project.id, None, 10)
    assert page.items == []
    deleted = store.audit_events(AuditFilter(event_types=["api_key.deleted"]), 10).items
    assert {event.resource_id for event in deleted} == {made.key.id if made.key else "", second.id}


def test_nothing_is_made_in_an_archived_project(store: ControlStore) -> None:
    project = store.create_project(ADMIN, "p")
    account = store.create_service_account(ADMIN, project.id, "bot", False, None)
    assert account.key is None and account.value is None and account.account.role == "none"
    store.archive_project(ADMIN, project.id)
    with pytest.raises(Archived):
        store.create_service_account(ADMIN, project.id, "late", True, None)
    with pytest.raises(Archived):
        store.create_key(ADMIN, project.id, account.account.id, None, None)
    store.rename_project(ADMIN, project.id, "renamed, archived")  # its name may still change
    assert store.project(project.id).status == "archived"


def test_an_object_of_another_project_is_missing(store: ControlStore) -> None:
    one, two = store.create_project(ADMIN, "one"), store.create_project(ADMIN, "two")
    made = store.create_service_account(ADMIN, one.id, "bot", True, None)
    assert made.key
    for lookup in (
        lambda: store.service_account(two.id, made.account.id),
        lambda: store.key(two.id, made.key.id if made.key else ""),
        lambda: store.delete_key(ADMIN, two.id, made.key.id if made.key else ""),
        lambda: store.delete_service_account(ADMIN, two.id, made.account.id),
    ):
        with pytest.raises(Missing):
            lookup()


def test_pages_follow_the_order_things_were_made(store: ControlStore) -> None:
    made = [store.create_project(ADMIN, f"p{n}").id for n in range(5)]
    first = store.projects(None, 2, False)
    assert [p.id for p in first.items] == made[:2] and first.has_more
    rest = store.projects(made[1], 10, False)
    assert [p.id for p in rest.items] == made[2:] and not rest.has_more
    assert store.projects("proj_not_made", 10, False).items == []
    store.archive_project(ADMIN, made[2])
    assert made[2] not in [p.id for p in store.projects(None, 10, False).items]
    assert made[2] in [p.id for p in store.projects(None, 10, True).items]
    keys = [store.create_admin_key(ADMIN, f"k{n}", None)[0].id for n in range(3)]
    assert [k.id for k in store.admin_keys(None, 10, newest_first=True).items] == keys[::-1]
    assert [k.id for k in store.admin_keys(keys[2], 10, newest_first=True).items] == keys[1::-1]


def test_the_audit_log_pages_back_and_forth_and_filters(store: ControlStore, clock: Clock) -> None:
    one = store.create_project(ADMIN, "one")
    clock.now += 10
    two = store.create_project(ADMIN, "two")
    clock.now += 10
    store.rename_project(ADMIN, two.id, "deux")
    clock.now += 10
    store.create_admin_key(ADMIN, "ops", None)
    events = store.audit_events(AuditFilter(), 100).items
    everything = [event.id for event in events]
    assert [event.type for event in events] == [
        "tenant.admin_api_key.created", "project.updated", "project.created", "project.created",
    ]  # fmt: skip
    newest = store.audit_events(AuditFilter(), 2)
    assert ids(newest) == everything[:2] and newest.has_more
    older = store.audit_events(AuditFilter(), 2, after=everything[1])
    assert ids(older) == everything[2:] and not older.has_more
    back = store.audit_events(AuditFilter(), 1, before=everything[2])
    assert ids(back) == [everything[1]] and back.has_more
    assert [e.resource_id for e in store.audit_events(AuditFilter(project_ids=[two.id]), 10).items] == [two.id] * 2
    assert ids(store.audit_events(AuditFilter(resource_ids=[one.id]), 10)) == [everything[3]]
    assert ids(store.audit_events(AuditFilter(tenant_only=True), 10)) == [everything[0]]
    assert store.audit_events(AuditFilter(actor_ids=["key_other"]), 10).items == []
    assert store.audit_events(AuditFilter(actor_emails=["a@b.c"]), 10).items == []
    start = events[3].effective_at
    assert ids(store.audit_events(AuditFilter(effective={"gt": start, "lte": start + 10}), 10)) == [everything[2]]
    assert len(store.audit_events(AuditFilter(effective={"gte": start, "lt": start + 20}), 10).items) == 2
    assert store.audit_events(AuditFilter(event_types=["project.archived"]), 10).items == []


def ids(page: Page[AuditEvent]) -> list[str]:
    return [event.id for event in page.items]


def test_model_permissions_are_set_replaced_and_deleted_each_a_version_with_its_audit_event(
    store: ControlStore,
) -> None:
    project, other = store.create_project(ADMIN, "limited"), store.create_project(ADMIN, "free")
    assert store.model_permissions(project.id) is None  # none: every model
    version = store.version()
    made = store.set_model_permissions(ADMIN, project.id, "allow_list", ["small", "qwen-1.5b"])
    assert (made.mode, made.model_ids) == ("allow_list", ["small", "qwen-1.5b"])
    store.set_model_permissions(ADMIN, project.id, "deny_list", ["large"])
    found = store.model_permissions(project.id)
    assert found is not None and (found.mode, found.model_ids) == ("deny_list", ["large"])
    assert store.version() == version + 2
    held = store.directory(9)
    access = held.projects[project.id].models
    assert access is not None and (access.mode, access.model_ids) == ("deny_list", frozenset({"large"}))
    assert held.projects[other.id].models is None

    assert store.delete_model_permissions(ADMIN, project.id) is True
    assert store.model_permissions(project.id) is None and store.directory(9).projects[project.id].models is None
    assert store.delete_model_permissions(ADMIN, project.id) is False  # had none: nothing audited
    events = store.audit_events(AuditFilter(resource_ids=[project.id], event_types=["project.updated"]), 10).items
    assert [event.details["changes_requested"] for event in events] == [
        {"model_permissions": None},
        {"model_permissions": {"mode": "deny_list", "model_ids": ["large"]}},
        {"model_permissions": {"mode": "allow_list", "model_ids": ["small", "qwen-1.5b"]}},
    ]
    assert all(event.actor_id == ADMIN.id and event.project_id == project.id for event in events)
    with pytest.raises(Missing):
        store.set_model_permissions(ADMIN, "proj_missing", "deny_list", [])
    with pytest.raises(Missing):
        store.model_permissions("proj_missing")


def test_a_spend_limit_is_set_replaced_and_removed_each_a_version_and_an_audit_event(store: ControlStore) -> None:
    project = store.create_project(ADMIN, "budgeted")
    with pytest.raises(Missing, match="spend limit"):
        store.spend_limit(project.id)
    version = store.version()
    made = store.set_spend_limit(ADMIN, project.id, 500, "USD", "month")
    assert (made.threshold_amount, made.currency, made.interval) == (500, "USD", "month")
    store.set_spend_limit(ADMIN, project.id, 900, "USD", "month")  # replaced, not a second row
    assert store.spend_limit(project.id).threshold_amount == 900 and store.version() == version + 2
    assert store.directory(max_priority=9).projects[project.id].spend_limit == 900
    removed = store.delete_spend_limit(ADMIN, project.id)
    assert removed.threshold_amount == 900 and store.version() == version + 3
    assert store.directory(max_priority=9).projects[project.id].spend_limit is None
    with pytest.raises(Missing):
        store.delete_spend_limit(ADMIN, project.id)
    with pytest.raises(Missing, match="project"):
        store.set_spend_limit(ADMIN, "proj_missing", 1, "USD", "month")
    assert store.version() == version + 3
    events = store.audit_events(AuditFilter(resource_ids=[project.id], event_types=["project.updated"]), 10).items
    assert [event.details["changes_requested"]["spend_limit"] for event in events] == [
        None,
        {"threshold_amount": 900, "currency": "USD", "interval": "month"},
        {"threshold_amount": 500, "currency": "USD", "interval": "month"},
    ]
    assert all(event.actor_id == ADMIN.id and event.project_id == project.id for event in events)


def test_a_months_costs_are_read_from_the_usage_history_each_width_counted_once(store: ControlStore) -> None:
    start, end = 1_800_000_000, 1_800_000_000 + 30 * 86_400

    def bucket(project: str, width: str, at: int, cost: int, model: str = "m") -> UsageBucket:
        return UsageBucket(width=width, start_time=at, project_id=project, model=model, api_key_id="", batch=False,
                           kind="completions", num_model_requests=1, input_tokens=1, input_cached_tokens=0,
                           output_tokens=1, cost=cost)  # fmt: skip

    rows = [
        # The same usage in buckets of each width: the minutes' lag behind (not yet rolled up).
        bucket("a", "1d", start, 700), bucket("a", "1h", start, 300), bucket("a", "1h", start + 3600, 400),
        bucket("a", "1m", start + 60, 100), bucket("a", "1d", start, 50, model="other"),
        bucket("b", "1d", start - 86_400, 10_000),  # the month before
        bucket("b", "1d", end, 20_000),  # the month after
        bucket("b", "1h", end - 3600, 5),
        bucket("c", "1d", start, 1),  # not asked for
    ]  # fmt: skip
    with store._sessions.begin() as session:
        session.add_all(rows)
    assert store.month_costs(start, end, ["a", "b", "nobody"]) == {"a": 750, "b": 5}
    assert store.month_costs(start, end, []) == {}


def test_a_rate_limit_set_is_one_version_more_its_audit_event_and_the_directorys(store: ControlStore) -> None:
    project = store.create_project(ADMIN, "limited")
    other = store.create_project(ADMIN, "free")
    assert store.rate_limits(project.id) == []
    version = store.version()
    found = store.update_rate_limit(ADMIN, project.id, "big", {"max_requests_per_1_minute": 20})
    assert store.version() == version + 1
    assert (found.model, found.max_requests_per_1_minute, found.max_tokens_per_1_minute) == ("big", 20, None)
    store.update_rate_limit(ADMIN, project.id, "big", {"max_tokens_per_1_minute": 900, "max_requests_per_1_day": 0})
    (row,) = store.rate_limits(project.id)
    assert (row.max_requests_per_1_minute, row.max_tokens_per_1_minute, row.max_requests_per_1_day) == (20, 900, None)

    directory = store.directory(max_priority=9)
    assert directory.projects[project.id].model_limits == {"big": ModelLimits(20, 900, 0, 0)}
    assert directory.projects[other.id].model_limits == {}
    # Cleared whole: the model has no limit of its own any more (its row stays, empty).
    store.update_rate_limit(ADMIN, project.id, "big", {"max_requests_per_1_minute": 0, "max_tokens_per_1_minute": 0})
    assert store.directory(max_priority=9).projects[project.id].model_limits == {}

    events = store.audit_events(AuditFilter(event_types=["rate_limit.updated"]), 10).items
    assert [event.resource_id for event in events] == ["rl-big"] * 3 and events[0].project_id == project.id
    assert events[-1].details == {"id": "rl-big", "changes_requested": {"max_requests_per_1_minute": 20}}


def test_a_rate_limit_is_refused_on_a_project_missing_or_archived_and_nothing_is_stored(store: ControlStore) -> None:
    with pytest.raises(Missing):
        store.update_rate_limit(ADMIN, "proj_none", "big", {"max_requests_per_1_minute": 1})
    with pytest.raises(Missing):
        store.rate_limits("proj_none")
    project = store.create_project(ADMIN, "gone")
    store.archive_project(ADMIN, project.id)
    version = store.version()
    with pytest.raises(Archived):
        store.update_rate_limit(ADMIN, project.id, "big", {"max_requests_per_1_minute": 1})
    assert store.version() == version and store.rate_limits(project.id) == []
    assert store.audit_events(AuditFilter(event_types=["rate_limit.updated"]), 10).items == []


def test_a_rate_limit_of_a_model_named_past_the_audit_logs_column_is_audited_by_its_digest(
    store: ControlStore,
) -> None:
    project = store.create_project(ADMIN, "long")
    model = "org/" + "m" * 100
    store.update_rate_limit(ADMIN, project.id, model, {"max_requests_per_1_minute": 3})
    (event,) = store.audit_events(AuditFilter(event_types=["rate_limit.updated"]), 10).items
    assert len(event.resource_id) <= 64 and event.resource_id.startswith("rl-")
    assert event.details["id"] == f"rl-{model}"
