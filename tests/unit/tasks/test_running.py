"""The jobs running in a worker process: whether each may start, the leases renewed while
it runs, and a cancellation reaching it. Redis is scripted at the edge
(testing/scripted_redis.py); MARK_STARTED itself runs on a real Redis in
tests/integration/shared/test_contract.py."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from shared.config import Config
from shared.contract import Start
from shared.storage import redis_clients
from tasks.running import RunningJobs
from testing.scripted_redis import AWAY, Call, ScriptedRedis, arity

pytestmark = pytest.mark.unit


class PubSub:
    """The cancel channel: messages the test publishes, read as redis-py's PubSub reads them."""

    def __init__(self) -> None:
        self.channels: list[str] = []
        self.messages: queue.Queue[dict[str, Any]] = queue.Queue()

    def subscribe(self, channel: str) -> None:
        self.channels.append(channel)

    def get_message(self, timeout: float) -> dict[str, Any] | None:
        try:
            return self.messages.get(timeout=min(timeout, 0.02))  # Redis may answer "nothing" early
        except queue.Empty:
            return None

    def publish(self, job_id: str) -> None:
        self.messages.put({"type": "message", "data": job_id.encode()})


class Stopped:
    """What a cancel stops (a reply being read): tells the test it was."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def abort(self) -> None:
        self.event.set()


class Worker:
    """A RunningJobs on scripted Redis clients: `commands` (leases, the start script) and
    `listening` (the cancel channel, given out once `subscribed` is set)."""

    def __init__(
        self, monkeypatch: pytest.MonkeyPatch, lease: float = 3, listening: bool = True, **answers: Any
    ) -> None:
        self.commands = ScriptedRedis(answers)
        self.pubsub = PubSub()
        self.subscribed = threading.Event()
        if listening:
            self.subscribed.set()
        self.listening = ScriptedRedis({"pubsub": self._pubsub})
        made = iter([self.commands, self.listening])
        monkeypatch.setattr(redis_clients, "sync_client", lambda config, **options: next(made))
        # A lease shorter than Config allows (3 s), so that its renewals come within the test.
        config = Config(_env_file=None, redis_prefix="p").model_copy(update={"job_lease": lease})  # type: ignore[call-arg]
        self.tags: list[str] = []
        self.jobs = RunningJobs(config, lambda: list(self.tags))

    def _pubsub(self, call: Call) -> PubSub:
        self.subscribed.wait(5)
        return self.pubsub


@pytest.fixture
def worker(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    made: list[Worker] = []

    def make(**settings: Any) -> Worker:
        made.append(Worker(monkeypatch, **settings))
        return made[-1]

    yield make
    for one in made:
        one.subscribed.set()
        one.jobs.close()


def test_a_job_starts_as_the_start_script_says(worker: Any) -> None:
    running = worker(MARK_STARTED=b"cancelled")
    assert running.jobs.start("j1", "replies:api-1") is Start.CANCELLED
    (call,) = running.commands.named("MARK_STARTED")
    keys = running.jobs.config.keys
    assert call.keys == [keys.job("j1"), keys.queued, keys.result("j1"), keys.lease("j1")]
    assert (len(call.keys), len(call.argv)) == arity("MARK_STARTED")
    assert call.argv[2:] == ["j1", 3, running.jobs.worker, "replies:api-1"]
    running.commands.answers["MARK_STARTED"] = "start"
    assert running.jobs.start("j2") is Start.START


def test_a_job_whose_start_cannot_be_marked_runs_all_the_same(worker: Any, caplog: pytest.LogCaptureFixture) -> None:
    running = worker(MARK_STARTED=AWAY)
    assert running.jobs.start("j1") is Start.START
    assert "could not mark job j1 started" in caplog.text


def test_a_job_running_elsewhere_is_waited_for_until_its_run_ends(worker: Any) -> None:
    verdicts = iter([b"running", b"running", b"answered"])
    running = worker(MARK_STARTED=lambda call: next(verdicts))
    assert running.jobs.wait_to_start("j1", poll=0) is Start.ANSWERED
    assert len(running.commands.named("MARK_STARTED")) == 3


def test_a_started_jobs_lease_and_held_messages_are_renewed_while_it_runs(worker: Any) -> None:
    running = worker(lease=0.03, MARK_STARTED=b"start")
    keys = running.jobs.config.keys
    running.tags.append("tag-7")
    with running.jobs.running("j1"):
        running.jobs.start("j1")
        renewed = running.commands.wait_for("set", 2)
        assert renewed[0].args == (keys.lease("j1"), running.jobs.worker) and renewed[0].kwargs == {"ex": 0.03}
        (held, *_) = running.commands.named("zadd")
        assert held.args[0] == keys.unacked_index and set(held.args[1]) == {"tag-7"} and held.kwargs == {"xx": True}
        assert running.jobs.count == 1
    assert running.jobs.count == 0
    running.tags.clear()
    with running.jobs.running("j2"):
        running.jobs.start("j2")
        before = len(running.commands.named("set"))
        running.commands.wait_for("set", before + 2)
    ended = [call.args[0] for call in running.commands.named("set")[before:]]
    assert ended and set(ended) == {keys.lease("j2")}  # the job that ended is no longer renewed


def test_a_job_not_started_here_is_never_leased(worker: Any) -> None:
    running = worker(lease=0.03, MARK_STARTED=b"running")
    with running.jobs.running("j1"):
        running.jobs.start("j1")
        running.tags.append("tag-1")
        running.commands.wait_for("zadd", 2)
    assert running.commands.named("set") == []


def test_a_cancel_published_for_a_running_job_stops_its_call(worker: Any) -> None:
    running = worker()
    stopped, other = Stopped(), Stopped()
    with running.jobs.running("j1") as cancel, running.jobs.running("j2") as untouched:
        cancel.attach(stopped)
        untouched.attach(other)
        running.pubsub.publish("j1")
        running.pubsub.publish("not-here")
        assert stopped.event.wait(5)
        assert cancel.is_set() and not untouched.is_set()
    assert running.pubsub.channels == [running.jobs.config.keys.cancel]


def test_a_cancel_announced_while_the_listener_was_away_is_found_on_the_jobs_mark(worker: Any) -> None:
    running = worker(listening=False, hexists=lambda call: call.args[0].endswith("j1"))  # (re)connecting
    stopped = Stopped()
    with running.jobs.running("j1") as cancel, running.jobs.running("j2") as left:
        cancel.attach(stopped)
        running.subscribed.set()
        assert stopped.event.wait(5)
        assert not left.is_set()


def test_a_stopping_worker_gives_up_its_leases_and_a_redis_away_does_not_stop_it(
    worker: Any, caplog: pytest.LogCaptureFixture
) -> None:
    running = worker(MARK_STARTED=b"start")
    keys = running.jobs.config.keys
    with running.jobs.running("j1"), running.jobs.running("j2"):
        running.jobs.start("j1")
        running.jobs.start("j2")
        running.jobs.release()
        (deleted,) = running.commands.named("delete")
        assert sorted(deleted.args) == [keys.lease("j1"), keys.lease("j2")]
        running.jobs.release()
        assert len(running.commands.named("delete")) == 1  # given up once
    again = worker(MARK_STARTED=b"start")
    with again.jobs.running("j3"), caplog.at_level(logging.WARNING):
        again.jobs.start("j3")
        again.commands.away = AWAY
        again.jobs.release()  # the leases lapse by themselves
