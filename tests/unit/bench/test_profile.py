"""bench.profile's reading of py-spy's collapsed stacks."""

from __future__ import annotations

import pytest

from bench.profile import by_package, package, shares, titled

pytestmark = pytest.mark.unit

COLLAPSED = """\
main (uvicorn/main.py:10);route (api/http/route_class.py:5);answer (api/native/s.py:7);dumps (json/__init__.py:1) 6
main (uvicorn/main.py:10);route (api/http/route_class.py:9);handle (fastapi/routing.py:3) 3
main (uvicorn/main.py:11);walk (api/x.py:1);walk (api/x.py:2);walk (api/x.py:3) 1
not a line
"""


def test_a_frame_is_named_by_its_package() -> None:
    assert package("APIRouter.handle (fastapi/routing.py)") == "fastapi"
    assert package("dumps (json/__init__.py)") == "json"
    assert package("run (threading.py)") == "threading"


def test_samples_are_counted_where_they_were_taken() -> None:
    assert by_package(COLLAPSED) == [("json", 0.6), ("fastapi", 0.3), ("api", 0.1)]


def test_a_function_counts_once_per_stack_and_its_lines_together() -> None:
    found = {share.frame: share for share in shares(COLLAPSED)}
    # route's two lines are one function: 9 of the 10 samples pass through it.
    assert found["route (api/http/route_class.py)"].inclusive == pytest.approx(0.9)
    assert found["route (api/http/route_class.py)"].own == 0
    # A recursion is not counted three times.
    assert found["walk (api/x.py)"].inclusive == pytest.approx(0.1)
    assert found["walk (api/x.py)"].own == pytest.approx(0.1)
    # Only the project's own code is listed.
    assert not [frame for frame in found if "uvicorn" in frame or "json" in frame]


def test_nothing_sampled_lists_nothing() -> None:
    assert shares("") == []
    assert by_package("") == []


def test_a_flame_graphs_title_is_replaced_and_nothing_else() -> None:
    svg = '<svg><text id="title" x="1">/home/me/py-spy record -o /tmp/x.svg</text><text id="details"> </text></svg>'
    assert titled(svg, "api: load") == '<svg><text id="title" x="1">api: load</text><text id="details"> </text></svg>'
