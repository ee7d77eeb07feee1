"""The unit tests mirror the sources: every module with logic has its test file at the
same place under tests/unit/ (``api/jobs/runner.py`` -> ``tests/unit/api/jobs/test_runner.py``;
a package's ``__init__.py`` -> ``test_<package>.py`` in the package's own folder), every
test file there is marked ``unit``, and no test outside tests/unit/ is.

A module "with logic" defines at least one function or method (``def`` or ``async def``,
at any depth). A module of constants, re-exports or plain declarations (an enum, a
model made of fields) has none and needs no test file of its own.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "tests" / "unit"
PACKAGES = ("api", "shared", "tasks", "clients", "local_stack")

# Modules with logic that need no unit test of their own: wiring that only connects
# parts tested each in its own file, and entry points that only start them. Keep it
# short: a module here with logic of its own belongs in the tree instead.
EXEMPT = {
    "api/services.py": "wiring: builds each part of an API process from its Config and starts and stops them "
    "together; each part is unit-tested on its own, their running together by tests/integration",
    "shared/broker/redis_transport.py": "kombu's Redis channel it extends pings Redis as it is built, so no part of "
    "it runs without a server: tests/integration/shared/test_redis_transport.py runs it on a real one, and "
    "tests/unit/test_private_apis.py checks the kombu internals it relies on",
    "shared/control/revision.py": "a developer's command that writes the next migration into the package; the "
    "scratch database it compares against is migrate()'s, tested in tests/unit/shared/control/test_database.py",
    "shared/control/migrations/versions/0001_control_plane.py": "a migration step: run from an empty database, by "
    "several processes at once, on SQLite and PostgreSQL, by tests/integration/shared/test_control_database.py",
    "shared/control/migrations/versions/0002_limits_spend_usage.py": "a migration step: run after 0001 on "
    "SQLite and PostgreSQL by tests/integration/shared/test_control_database.py; tests/unit/shared/control/"
    "test_database.py checks the steps make exactly the models' tables",
    "api/admin/router.py": "routes only, each calling the control plane's serving (tests/unit/api/admin/"
    "test_serving.py); every route through the openai SDK's admin client in tests/integration/api/test_organization.py",
    "api/admin/usage_router.py": "routes only, each calling the usage reports (tests/unit/api/admin/test_usage.py); "
    "every route through the openai SDK's admin client in tests/integration/api/test_organization_usage.py",
}


def has_logic(path: Path) -> bool:
    """Whether the module defines a function or a method."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return any(isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) for node in ast.walk(tree))


def mirrored(source: Path) -> Path:
    """Where the unit test of `source` (relative to the root) lives."""
    if source.name == "__init__.py":
        return UNIT / source.parent / f"test_{source.parent.name}.py"
    return UNIT / source.parent / f"test_{source.stem}.py"


def sources(packages: tuple[str, ...] = PACKAGES) -> list[Path]:
    """Every module of `packages`, relative to the root."""
    return sorted(path.relative_to(ROOT) for package in packages for path in (ROOT / package).rglob("*.py"))


def missing_tests(packages: tuple[str, ...] = PACKAGES) -> list[str]:
    """`source -> its missing test file` for each module with logic and no unit test."""
    return [
        f"{source} -> {mirrored(source).relative_to(ROOT)}"
        for source in sources(packages)
        if source.as_posix() not in EXEMPT and has_logic(ROOT / source) and not mirrored(source).exists()
    ]


def marks_unit(path: Path) -> bool:
    """Whether the test module uses the ``unit`` marker (``pytest.mark.unit``, ``mark.unit``),
    anywhere: a test's decorator, ``pytestmark``, a parameter's ``marks``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "unit":
            owner = node.value
            if (isinstance(owner, ast.Attribute) and owner.attr == "mark") or (
                isinstance(owner, ast.Name) and owner.id == "mark"
            ):
                return True
    return False


def test_every_module_with_logic_has_its_unit_test_at_the_mirrored_path() -> None:
    missing = missing_tests()
    assert not missing, "modules with logic and no unit test at the mirrored path:\n" + "\n".join(missing)


def test_the_exempt_modules_exist_and_have_logic() -> None:
    # An entry left behind by a move or a deletion would hide the module that took its place.
    stale = [name for name in EXEMPT if not (ROOT / name).exists() or not has_logic(ROOT / name)]
    assert not stale, f"EXEMPT names modules that are gone or hold no logic: {stale}"


def test_no_test_outside_tests_unit_is_marked_unit() -> None:
    outside = sorted(
        path.relative_to(ROOT)
        for path in (ROOT / "tests").rglob("*.py")
        if not path.is_relative_to(UNIT) and marks_unit(path)
    )
    assert not outside, "unit-marked tests outside tests/unit/ (move them to the mirrored path):\n" + "\n".join(
        map(str, outside)
    )


def test_every_test_module_under_tests_unit_is_marked_unit() -> None:
    # `pytest -m unit tests/unit` (make unit) would leave an unmarked one out, unseen.
    unmarked = sorted(path.relative_to(ROOT) for path in UNIT.rglob("test_*.py") if not marks_unit(path))
    assert not unmarked, "test modules under tests/unit/ without the unit mark:\n" + "\n".join(map(str, unmarked))


def test_the_mirror_of_a_module_and_of_a_package() -> None:
    assert mirrored(Path("api/jobs/runner.py")) == UNIT / "api/jobs/test_runner.py"
    assert mirrored(Path("shared/contract/__init__.py")) == UNIT / "shared/contract/test_contract.py"
    assert mirrored(Path("api/__init__.py")) == UNIT / "api/test_api.py"
