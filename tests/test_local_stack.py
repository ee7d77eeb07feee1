"""The run command's plan: what it starts, and what it refuses to start."""

from __future__ import annotations

import pytest

from gateway.config import Config
from local_stack.run import Refused, plan

pytestmark = pytest.mark.unit


def test_flower_on_the_network_needs_a_password() -> None:
    with pytest.raises(Refused, match="FLOWER_BASIC_AUTH"):
        plan(Config(_env_file=None, flower_host="0.0.0.0"))  # type: ignore[call-arg]


def test_flowers_password_is_passed_on_but_not_written_with_the_rest() -> None:
    steps = plan(Config(_env_file=None, flower_host="0.0.0.0", flower_basic_auth="ops:s3cret"))  # type: ignore[call-arg]
    assert steps.secret_env == {"FLOWER_BASIC_AUTH": "ops:s3cret"}
    assert "s3cret" not in repr(steps.env) and "s3cret" not in " ".join(steps.notes)


def test_flower_on_localhost_may_go_without() -> None:
    steps = plan(Config(_env_file=None))  # type: ignore[call-arg]
    assert "flower" in steps.processes and steps.secret_env == {}
