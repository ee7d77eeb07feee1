"""The Kubernetes example's KEDA trigger evaluated against a real API's GET /scaling.
The manifests themselves are read and checked in tests/unit/deploy/test_k8s.py."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from tests.conftest import Stack
from tests.unit.deploy.test_k8s import kind


def gjson(document: Any, path: str) -> Any:
    """A GJSON path of plain keys (``a.b.c``), as KEDA's metrics-api scaler reads it."""
    for key in re.split(r"(?<!\\)\.", path):
        document = document[key.replace("\\.", ".")]
    return document


@pytest.mark.integration
def test_the_scaler_reads_a_number_off_a_real_api(stack: Stack) -> None:
    (scaled,) = kind("ScaledObject").values()
    (trigger,) = scaled["spec"]["triggers"]
    answer = httpx.get(f"{stack.url}{httpx.URL(trigger['metadata']['url']).path}", timeout=10)
    assert answer.status_code == 200
    value = gjson(answer.json(), trigger["metadata"]["valueLocation"])
    assert isinstance(value, int) and value >= 0
