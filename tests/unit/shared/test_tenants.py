"""The keys file read as tenants: YAML, JSON, or a plain list of keys."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest

from shared.tenants import DEFAULT_TENANT, BadTenants, Directory, Grant, Tenant, digest, load_tenants

pytestmark = pytest.mark.unit

TENANTS_YAML = """
tenants:
  - name: research
    weight: 3
    keys: ["key-r1", "key-r2"]
    quotas: {{requests_per_minute: 10, tokens_per_minute: 1000, tokens_per_day: 50000, jobs_in_flight: 4}}
  - name: product
    key_digests: ["sha256:{}"]
  - name: ops
    admin: true
    keys: ["key-ops"]
""".format(hashlib.sha256(b"key-p1").hexdigest())


def test_tenants_come_with_their_keys_weights_and_quotas(tmp_path: Path) -> None:
    keys_file = tmp_path / "tenants.yaml"
    keys_file.write_text(TENANTS_YAML)
    tenants = load_tenants("env-key", str(keys_file), default_rpm=60)
    research = tenants.by_digest[digest("key-r2")]
    assert research.name == "research" and research.weight == 3 and not research.admin
    assert research.quotas.tokens_per_minute == 1000 and research.quotas.jobs_in_flight == 4
    # A key given by its digest alone: the file holds no secret.
    assert tenants.by_digest[digest("key-p1")].name == "product"
    assert tenants.by_digest[digest("key-ops")].admin
    # API_KEYS are the default tenant's, with RATE_LIMIT_PER_MINUTE its requests per minute.
    default = tenants.by_digest[digest("env-key")]
    assert default.name == DEFAULT_TENANT and default.quotas.requests_per_minute == 60
    assert tenants.keyed and digest("key-p2") not in tenants.by_digest


def test_the_same_tenants_in_json(tmp_path: Path) -> None:
    keys_file = tmp_path / "tenants.json"
    keys_file.write_text(json.dumps({"tenants": [{"name": "a", "keys": ["ka"], "weight": 0.5}]}))
    tenants = load_tenants("", str(keys_file))
    assert tenants.by_digest[digest("ka")].weight == 0.5


def test_a_plain_list_of_keys_is_the_default_tenant(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text("# one per line\nfile-key-1\n\nfile-key-2  # a comment\n")
    tenants = load_tenants("", str(keys_file), default_rpm=5)
    assert {tenants.by_digest[digest(k)].name for k in ("file-key-1", "file-key-2")} == {DEFAULT_TENANT}
    assert len(tenants.by_digest) == 2


def test_without_keys_no_request_needs_one() -> None:
    tenants = load_tenants("", "")
    assert not tenants.keyed and tenants.get("anyone").name == DEFAULT_TENANT


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("tenants:\n  - name: Bad Name\n    keys: [k]\n", "tenants.0.name"),
        ("tenants:\n  - name: a\n", "has no keys"),
        ("tenants:\n  - name: a\n    keys: [k]\n    weight: 0\n", "tenants.0.weight"),
        ("tenants:\n  - name: a\n    keys: [k]\n    quotas: {tokens_per_hour: 5}\n", "tokens_per_hour"),
        ("tenants:\n  - name: a\n    key_digests: [abc]\n", "SHA-256"),
        ("tenants:\n  - name: a\n    keys: [k]\n  - name: b\n    keys: [k]\n", "also 'a'"),
        ("tenants:\n  - name: a\n    keys: [k]\n  - name: a\n    keys: [j]\n    weight: 2\n", "declared twice"),
        ("tenants: [oops", "not YAML"),
    ],
)
def test_a_keys_file_that_is_wrong_says_where(tmp_path: Path, text: str, named: str) -> None:
    keys_file = tmp_path / "tenants.yaml"
    keys_file.write_text(text)
    with pytest.raises(BadTenants, match=named):
        load_tenants("", str(keys_file))


def test_a_key_of_api_keys_cannot_be_another_tenants(tmp_path: Path) -> None:
    keys_file = tmp_path / "tenants.yaml"
    keys_file.write_text("tenants:\n  - name: a\n    keys: [shared]\n")
    with pytest.raises(BadTenants, match="API_KEYS is also tenant 'a'"):
        load_tenants("shared", str(keys_file))


def test_each_tenant_of_a_document_has_a_highest_priority_a_plain_list_has_none(tmp_path: Path) -> None:
    keys_file = tmp_path / "tenants.yaml"
    keys_file.write_text(
        "tenants:\n  - name: a\n    keys: [ka]\n  - name: b\n    keys: [kb]\n    quotas: {max_priority: 8}\n"
    )
    tenants = load_tenants("env-key", str(keys_file), max_priority=5)
    assert tenants.by_digest[digest("ka")].quotas.max_priority == 5  # the deployment's (TENANT_MAX_PRIORITY)
    assert tenants.by_digest[digest("kb")].quotas.max_priority == 8  # its own
    assert tenants.by_digest[digest("env-key")].quotas.max_priority == 5  # API_KEYS': the default tenant
    plain = tmp_path / "keys"
    plain.write_text("key-1\n")
    assert load_tenants("", str(plain), max_priority=5).by_digest[digest("key-1")].quotas.max_priority is None
    keys_file.write_text("tenants:\n  - name: a\n    keys: [ka]\n    quotas: {max_priority: 10}\n")
    with pytest.raises(BadTenants, match=r"tenants\.0\.quotas\.max_priority"):
        load_tenants("", str(keys_file))


def test_admin_api_keys_are_no_tenants_keys_and_may_not_be_one() -> None:
    tenants = load_tenants("key-default", "", admin_keys="sk-admin-1, sk-admin-2,")
    assert set(tenants.admins) == {digest("sk-admin-1"), digest("sk-admin-2")}
    assert tenants.find(digest("sk-admin-1"), 0) is None and tenants.admin(digest("key-default"), 0) is None
    assert tenants.admin(digest("sk-admin-2"), 0) is not None
    assert not load_tenants("", "", admin_keys="sk-admin-1").keyed  # admin keys alone do not close the gateway
    with pytest.raises(BadTenants, match="ADMIN_API_KEYS"):
        load_tenants("same-key", "", admin_keys="same-key")


def test_projects_made_at_runtime_are_found_beside_the_files_tenants_until_their_keys_expire() -> None:
    tenants = load_tenants("key-default", "")
    project = Tenant("proj_0123456789abcdef01234567")
    tenants.runtime = Directory(
        1, {project.name: project}, {digest("sk-proj-a"): Grant(project, "key_a", expires_at=100.0)}
    )
    # Its project's tenant, naming the key (its jobs' usage is counted to it).
    assert tenants.find(digest("sk-proj-a"), 99.9) == replace(project, key_id="key_a")
    assert tenants.find(digest("sk-proj-a"), 100.0) is None  # expired as it is presented, not at a reload
    assert tenants.find(digest("key-default"), 0).name == DEFAULT_TENANT  # type: ignore[union-attr]
    assert tenants.get(project.name) == project
    assert tenants.get("unknown").name == DEFAULT_TENANT
    assert tenants.keyed
