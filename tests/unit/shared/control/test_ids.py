"""The control plane's ids and keys: a project's id is a tenant's name, a key is kept as
its digest and shown redacted."""

from __future__ import annotations

import hashlib
import re

import pytest

from shared.control import ids
from shared.tenants import TENANT_PATTERN

pytestmark = pytest.mark.unit


def test_a_projects_id_is_a_valid_tenant_name_and_every_id_is_new() -> None:
    made = {ids.new_id(ids.PROJECT) for _ in range(1000)}
    assert len(made) == 1000
    for project_id in made:
        assert re.fullmatch(TENANT_PATTERN, project_id) and re.fullmatch(ids.PROJECT_ID_PATTERN, project_id)
    assert re.fullmatch(ids.SERVICE_ACCOUNT_ID_PATTERN, ids.new_id(ids.SERVICE_ACCOUNT))
    assert re.fullmatch(ids.KEY_ID_PATTERN, ids.new_id(ids.KEY))


@pytest.mark.parametrize("prefix", [ids.PROJECT_KEY, ids.ADMIN_KEY])
def test_a_key_is_kept_as_its_sha256_and_shown_by_its_last_four_characters(prefix: str) -> None:
    key = ids.new_key(prefix)
    assert key.value.startswith(prefix) and len(key.value) == len(prefix) + 43  # 256 random bits
    assert key.digest == hashlib.sha256(key.value.encode()).digest()
    assert key.redacted == f"{prefix}...{key.value[-4:]}"
    assert key.value[len(prefix) : -4] not in key.redacted
    assert ids.new_key(prefix).value != key.value
