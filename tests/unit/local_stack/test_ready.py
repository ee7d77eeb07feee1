"""The local stack's readiness wait: each part asked until it answers, or the start stopped naming it."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from local_stack.ready import banner, wait_http
from shared.config import Config
from testing.fake_model_server import FakeModelServer, free_port

pytestmark = pytest.mark.unit


@pytest.fixture
def fake() -> Iterator[FakeModelServer]:
    server = FakeModelServer().start()
    yield server
    server.stop()


def test_a_part_that_answers_is_waited_for_no_longer(fake: FakeModelServer) -> None:
    wait_http("model server", f"{fake.url}/health", time.monotonic() + 30)


def test_a_part_that_never_answers_stops_the_start_naming_it() -> None:
    url = f"http://127.0.0.1:{free_port()}/health"
    with pytest.raises(SystemExit) as stopped:
        wait_http("model server", url, time.monotonic() + 0.05)
    assert str(stopped.value.code).startswith(f"model server did not answer {url}")


def test_the_banner_names_the_console_and_whether_it_needs_a_key() -> None:
    open_api = banner(Config(_env_file=None), "http://127.0.0.1:8000", "http://127.0.0.1:5555")  # type: ignore[call-arg]
    assert "console  http://127.0.0.1:8000/console  (no API keys configured: any key signs in)" in open_api
    assert "docs     http://127.0.0.1:8000/docs" in open_api
    keyed = banner(Config(_env_file=None, api_keys="k1"), "http://h:1", "http://h:2")  # type: ignore[call-arg]
    assert "console  http://h:1/console  (sign in with an API key)" in keyed
