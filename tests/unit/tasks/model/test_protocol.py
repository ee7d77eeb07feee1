"""What a model server is asked and answers: priorities, errors, whole answers, embeddings."""

from __future__ import annotations

import pytest

from tasks.model.protocol import server_priority

pytestmark = pytest.mark.unit


def test_a_jobs_priority_maps_to_vllms_where_lower_is_sooner() -> None:
    assert [server_priority(p) for p in (9, 5, 0)] == [0, 4, 9]
    assert server_priority(None) == server_priority(5)  # a job without one: the API's default
