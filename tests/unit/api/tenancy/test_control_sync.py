"""An API process's projects and keys kept as the control plane's database has them: read
at start, read again when the version differs (a change whose notice never came), and
held while the database cannot be read. On a SQLite file, without Redis (the notices'
own test is tests/integration/api/test_projects_across_processes.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from sqlalchemy.exc import SQLAlchemyError

from api.observability.metrics import Metrics
from api.tenancy.control_sync import DATABASE_THREADS, ControlSync, Unanswered
from api.tenancy.guard import Guard
from shared.config import Config
from shared.control.database import engine_for
from shared.control.store import Actor, ControlStore
from shared.tenants import digest
from testing.fake_model_server import free_port

pytestmark = pytest.mark.unit

ADMIN = Actor("key_test", "test")


async def until(done: Callable[[], bool]) -> None:
    """Until `done()` holds (10 s at most): the guard's state has no event to await."""
    async with asyncio.timeout(10):
        while not done():  # noqa: ASYNC110 - see above
            await asyncio.sleep(0.01)


def test_changes_are_read_at_the_next_poll_and_what_is_held_outlives_the_database_away(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="api.tenancy.control_sync")
    database = tmp_path / "control.db"
    nowhere = aioredis.Redis(port=free_port(), retry=Retry(NoBackoff(), 0))  # no Redis: no notice ever comes
    config = Config(_env_file=None, control_database_url=f"sqlite:///{database}", control_poll_seconds=0.05)  # type: ignore[call-arg]

    async def main() -> None:
        store = ControlStore(engine_for(config.control_database))
        guard = Guard(config, nowhere, Metrics())
        sync = ControlSync(config, store, guard, nowhere)
        await sync.start()  # the schema made, nothing in it
        assert sync.database_up and sync.version == 0 and guard.tenants.runtime.keys == {}
        elsewhere = ControlStore(engine_for(config.control_database))  # another process's
        project = elsewhere.create_project(ADMIN, "made elsewhere")
        made = elsewhere.create_service_account(ADMIN, project.id, "bot", True, None)
        assert made.value
        key = digest(made.value)
        running = asyncio.create_task(sync.run())
        try:
            await until(lambda: guard.tenants.find(key, time.time()) is not None)
            assert guard.tenants.get(project.id).name == project.id and sync.version == 2

            # The database goes away (a folder where its file was): the keys held stay.
            store.engine.dispose()
            database.rename(tmp_path / "away.db")
            database.mkdir()
            await until(lambda: "control plane database unavailable" in caplog.text)
            assert guard.tenants.find(key, time.time()) is not None and sync.version == 2
            assert not sync.database_up  # for /metrics
            assert caplog.text.count("control plane database unavailable") == 1  # said once, not at every poll

            database.rmdir()
            (tmp_path / "away.db").rename(database)
            elsewhere.delete_key(ADMIN, project.id, made.key.id if made.key else "")
            await until(lambda: guard.tenants.find(key, time.time()) is None)
            assert sync.version == 3 and "control plane database back" in caplog.text and sync.database_up
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
            store.engine.dispose()
            elsewhere.engine.dispose()
            await nowhere.aclose()

    asyncio.run(main())


def test_an_api_process_does_not_start_without_its_database(tmp_path: Path) -> None:
    (tmp_path / "control.db").mkdir()  # cannot be opened as a database
    config = Config(_env_file=None, control_database_url=f"sqlite:///{tmp_path}/control.db")  # type: ignore[call-arg]
    nowhere = aioredis.Redis(port=free_port(), retry=Retry(NoBackoff(), 0))
    sync = ControlSync(
        config, ControlStore(engine_for(config.control_database)), Guard(config, nowhere, Metrics()), nowhere
    )
    with pytest.raises(RuntimeError, match=r"control plane database sqlite:///.*control\.db unavailable"):
        asyncio.run(sync.start())


def test_a_database_that_hangs_holds_none_of_the_processs_other_threads_and_is_given_up_on_in_time(
    tmp_path: Path,
) -> None:
    config = Config(_env_file=None, control_database_url=f"sqlite:///{tmp_path}/control.db")  # type: ignore[call-arg]
    nowhere = aioredis.Redis(port=free_port(), retry=Retry(NoBackoff(), 0))
    store = ControlStore(engine_for(config.control_database))
    sync = ControlSync(config, store, Guard(config, nowhere, Metrics()), nowhere, call_seconds=0.3)
    answers = threading.Event()  # set: the database answers again

    async def main() -> None:
        started = time.monotonic()
        # More calls than the control plane has threads, each waiting on the database.
        hung = [asyncio.create_task(sync.call(answers.wait)) for _ in range(DATABASE_THREADS + 3)]
        # The threads the rest of the process runs its blocking calls on are free meanwhile.
        assert await asyncio.wait_for(asyncio.gather(*(asyncio.to_thread(time.sleep, 0) for _ in range(8))), 0.2)
        for call in hung:  # each told the database is unavailable, in time
            with pytest.raises(Unanswered, match=r"did not answer within 0\.3s"):
                await call
        assert time.monotonic() - started < 2.0
        assert isinstance(Unanswered(), SQLAlchemyError)  # what the admin endpoints answer 503 for
        answers.set()  # back: its threads free again
        assert await sync.call(lambda: "answered") == "answered"

    try:
        asyncio.run(main())
    finally:
        answers.set()
        sync.close()
        store.engine.dispose()
