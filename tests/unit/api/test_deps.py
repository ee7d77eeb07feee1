"""What routes read of the request (api/deps.py): its tenant, whose files it sees, its
timing, as the route class left them; and the key of a job an admin may name."""

from __future__ import annotations

import asyncio

import pytest
from starlette.requests import Request

from api.deps import _owner, _tenant, _timing, whose_key
from api.errors import JobNotFound
from api.observability.server_timing import Timing
from shared.tenants import EVERYONE, Owner, Tenant

pytestmark = pytest.mark.unit

ALPHA, ADMIN = Tenant("alpha"), Tenant("ops", admin=True)
MISSING = JobNotFound("no job 'j1'")


def test_a_job_id_is_the_keys_tenants_and_only_an_admin_names_another() -> None:
    assert whose_key("j1", ALPHA, None, MISSING) == "alpha~j1"
    assert whose_key("j1", ALPHA, "alpha", MISSING) == "alpha~j1"
    assert whose_key("j1", Tenant("default"), None, MISSING) == "j1"
    assert whose_key("j1", ADMIN, "alpha", MISSING) == "alpha~j1"
    with pytest.raises(JobNotFound):  # as for an unknown id: another tenant's jobs are not there
        whose_key("j1", ALPHA, "beta", MISSING)


def test_the_request_state_the_route_class_left_is_what_routes_get() -> None:
    request = Request({"type": "http", "state": {}})
    assert asyncio.run(_tenant(request)).name == "default" and asyncio.run(_owner(request)) is EVERYONE
    timing, owner = Timing(1.0), Owner("tenant:alpha")
    request.state.tenant, request.state.owner, request.state.timing = ALPHA, owner, timing
    assert asyncio.run(_tenant(request)) is ALPHA and asyncio.run(_owner(request)) is owner
    assert asyncio.run(_timing(request)) is timing
