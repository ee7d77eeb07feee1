"""The worker's wiring: the result text Flower shows, and Celery's per-job lines."""

from __future__ import annotations

import logging

import pytest

from tasks import wiring

pytestmark = pytest.mark.unit


def test_the_result_text_for_flower_is_its_repr_cut_to_celerys_limit() -> None:
    from celery.app import trace

    answer = {"content": "x" * 5000, "usage": {"total_tokens": 7}}
    assert trace.saferepr is wiring.result_repr
    assert trace.saferepr(answer, 1024) == repr(answer)[:1021] + "..."
    assert trace.saferepr({"content": "hi"}, 1024) == "{'content': 'hi'}"


@pytest.mark.parametrize(("level", "celery_lines"), [(logging.INFO, False), ("INFO", False), (logging.DEBUG, True)])
def test_celerys_per_job_lines_are_off_below_debug(level: int | str, celery_lines: bool) -> None:
    names = ("celery.worker.strategy", "celery.app.trace")
    before = {name: logging.getLogger(name).level for name in names}
    try:
        for name in names:
            logging.getLogger(name).setLevel(logging.NOTSET)
        wiring._json_logs(logger=None, loglevel=level)
        expected = logging.NOTSET if celery_lines else logging.WARNING  # NOTSET: the worker's level
        assert [logging.getLogger(name).level for name in names] == [expected, expected]
    finally:
        for name, value in before.items():
            logging.getLogger(name).setLevel(value)
