"""Each shared resource has its hostile-tenant test and its row in docs/tenants.md."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.integration.shared_resources import SHARED_RESOURCES

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
FOLDER = ROOT / "tests" / "integration" / "shared_resources"


@pytest.mark.parametrize("resource", sorted(SHARED_RESOURCES))
def test_each_shared_resource_has_a_hostile_tenant_test(resource: str) -> None:
    module = FOLDER / f"{SHARED_RESOURCES[resource]}.py"
    assert module.exists(), f"{resource}: {module.name} is missing"
    tree = ast.parse(module.read_text())
    tests = [node.name for node in tree.body if isinstance(node, ast.FunctionDef)]
    assert any(name.startswith("test_hostile_tenant_beside_normal") for name in tests), (resource, tests)


def test_every_module_of_the_folder_is_a_listed_resource() -> None:
    modules = {path.stem for path in FOLDER.glob("test_*.py")}
    assert modules == set(SHARED_RESOURCES.values())


def test_docs_table_of_shared_resources_names_each_one() -> None:
    text = (ROOT / "docs" / "tenants.md").read_text()
    section = text.split("### Shared resources", 1)[1].split("\n#", 1)[0]
    rows = re.findall(r"^\| \*\*(.+?)\*\* \|", section, flags=re.MULTILINE)
    assert sorted(rows) == sorted(SHARED_RESOURCES)
