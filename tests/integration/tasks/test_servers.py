"""A model with several servers, as a worker process runs its jobs: slots shared through
Redis, failing over, draining and probing, fallbacks, prefix affinity. Real Redis and
fake model servers over HTTP; the whole stack is in tests/faults/test_servers.py."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from shared.config import Config
from shared.contract import ModelServerRejected, ModelServerUnavailable
from shared.servers import servers_state
from tasks.model import Cancel, Cancelled, ChatRequest
from tasks.model.pooled import PooledModel
from tasks.worker import Worker
from testing.processes import REDIS, reachable, remove_traces

pytestmark = pytest.mark.integration


@pytest.fixture
def workers() -> Iterator[Callable[..., Worker]]:
    if not reachable(REDIS):
        pytest.skip("Redis is not running on 127.0.0.1:6379")
    made: list[Worker] = []

    def make(models: list[dict[str, Any]], prefix: str = "", **settings: Any) -> Worker:
        values = {"llm_retry_backoff": 0.01, "llm_max_retries": 1, "server_probe_backoff": 0.2,
                  "server_probe_max": 0.4, **settings}  # fmt: skip
        config = Config(
            _env_file=None,  # type: ignore[call-arg]
            redis_host=REDIS[0],
            redis_port=REDIS[1],
            redis_prefix=prefix or f"test-{uuid.uuid4().hex[:10]}",
            models=json.dumps({"models": models}),
            **values,
        )
        worker = Worker(config)
        made.append(worker)
        return worker

    yield make
    for worker in made:
        worker.close()
        remove_traces(worker.config)


def ask(content: str, history: list[dict[str, str]] | None = None, **fields: Any) -> ChatRequest:
    messages = [*(history or []), {"role": "user", "content": content}]
    return ChatRequest(messages=messages, temperature=0.2, tokens_limit=16, **fields)


def run_all(model: PooledModel, count: int, threads: int) -> list[dict[str, Any]]:
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda n: answered(model.chat(ask(f"job {n}"))), range(count)))


def answered(completion: Any) -> dict[str, Any]:
    """The completion as the task returns it, and the server that answered (in logs and spans only)."""
    return {**completion.as_dict(), "server": completion.served_by[1]}


def state(worker: Worker, name: str) -> dict[str, dict[str, Any]]:
    model = worker.registry.by_name(name)
    raw = worker.pool(model)._redis.hgetall(worker.config.keys.servers(name))
    return {server["name"]: server for server in servers_state(model, raw)}


def test_a_slow_server_takes_fewer_jobs_in_proportion_to_its_speed(servers: Any, workers: Any) -> None:
    fast, slow = servers(latency=0.02), servers(latency=0.2)
    worker = workers([{"name": "m", "servers": [{"url": fast.url, "slots": 4}, {"url": slow.url, "slots": 4}]}])
    model = worker.client("m")
    assert isinstance(model, PooledModel)
    answers = run_all(model, 240, 16)
    assert [a["content"] for a in answers] == [f"echo: job {n}" for n in range(240)]
    shares = Counter(a["server"] for a in answers)
    assert sum(shares.values()) == 240
    # Each server takes jobs as fast as its slots free: ten times faster, ten times the jobs
    # (the line keeps both busy: 16 callers for 8 slots). Against their speeds as they
    # delivered them (a loaded machine slows the fast one's calls most); 240 jobs leave
    # the slow server's share a few jobs either way, hence the margin (the fault test's is 15 %).
    ratio = shares[f"127.0.0.1:{fast.port}"] / shares[f"127.0.0.1:{slow.port}"]
    speeds = (slow.busy_seconds / slow.answered) / (fast.busy_seconds / fast.answered)
    assert 0.6 * speeds <= ratio <= 1.4 * speeds, (shares, speeds)
    assert fast.peak_in_flight <= 4 and slow.peak_in_flight <= 4  # never more than its slots
    shown = state(worker, "m")
    assert all(s["busy"] == 0 and s["state"] == "healthy" for s in shown.values())
    assert sum(s["jobs"] for s in shown.values()) == 240


def test_slots_are_shared_by_every_worker_process(servers: Any, workers: Any) -> None:
    one, two = servers(latency=0.05), servers(latency=0.05)
    registry = [{"name": "m", "servers": [{"url": one.url, "slots": 2}, {"url": two.url, "slots": 2}]}]
    first = workers(registry)
    second = workers(registry, prefix=first.config.redis_prefix)  # another process of the same deployment
    with ThreadPoolExecutor(12) as pool:
        calls = [pool.submit(w.client("m").chat, ask(f"{n}")) for n, w in enumerate([first, second] * 12)]
        assert all(call.result().content.startswith("echo") for call in calls)
    assert one.peak_in_flight == 2 and two.peak_in_flight == 2


def test_a_refused_connection_fails_over_at_once_without_spending_the_jobs_retries(servers: Any, workers: Any) -> None:
    alive, dead = servers(), servers()
    dead.stop()
    worker = workers(
        [{"name": "m", "servers": [{"url": dead.url, "slots": 8}, {"url": alive.url, "slots": 1}]}],
        llm_max_retries=0,
    )
    answers = run_all(worker.client("m"), 10, 1)
    assert all(a["server"] == f"127.0.0.1:{alive.port}" for a in answers)
    shown = state(worker, "m")
    assert shown[f"127.0.0.1:{dead.port}"]["state"] == "down"
    assert shown[f"127.0.0.1:{dead.port}"]["failures"] == 1  # down at its first refusal, then left alone
    assert "refused" in shown[f"127.0.0.1:{dead.port}"]["last_failure"]


def test_a_server_answering_500s_is_drained_probed_and_takes_jobs_again(servers: Any, workers: Any) -> None:
    good, sick = servers(latency=0.01), servers(latency=0.01)
    sick.broken = 500
    worker = workers([{"name": "m", "servers": [{"url": sick.url, "slots": 4}, {"url": good.url, "slots": 4}]}])
    sick_name = f"127.0.0.1:{sick.port}"
    answers = run_all(worker.client("m"), 30, 4)
    assert all(a["server"] == f"127.0.0.1:{good.port}" for a in answers)  # no job failed
    shown = state(worker, "m")[sick_name]
    # Down at SERVER_FAILURES in a row; the calls it ran then end as they will (at most its
    # slots in all), and it takes no more.
    assert shown["state"] == "down" and 3 <= shown["failures"] <= 3 + 3
    probes_before = len([r for r in sick.requests if r.get("messages") is None])
    sick.broken = None
    deadline = time.monotonic() + 10
    while state(worker, "m")[sick_name]["state"] != "healthy":
        assert time.monotonic() < deadline, "the server was not probed back"
        time.sleep(0.05)
    answers = run_all(worker.client("m"), 40, 8)
    assert Counter(a["server"] for a in answers)[sick_name] > 0  # it takes jobs again
    assert probes_before == 0  # its probes went to /health, not to completions


def test_every_server_down_then_one_back_the_jobs_waited_and_were_answered(servers: Any, workers: Any) -> None:
    one, two = servers(), servers()
    one.broken = two.broken = 503
    worker = workers(
        [{"name": "m", "servers": [{"url": one.url, "slots": 2}, {"url": two.url, "slots": 2}]}], llm_deadline=30
    )
    model = worker.client("m")
    with ThreadPoolExecutor(6) as pool:
        early = [pool.submit(model.chat, ask(f"early {n}")) for n in range(2)]
        # Both servers fail their calls until they are down: the jobs' own retries are
        # then spent while no server is up, and those left wait for one.
        deadline = time.monotonic() + 10
        while any(s["state"] == "healthy" for s in state(worker, "m").values()):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        waiting = [pool.submit(model.chat, ask(f"late {n}")) for n in range(4)]
        time.sleep(0.5)
        assert not any(call.done() for call in waiting)  # waiting, not failed
        two.broken = None
        answers = [call.result(timeout=20) for call in waiting]
        for call in early:  # failed (their retries spent while the servers went down) or answered later
            assert call.exception(timeout=20) is None or "gave up" in str(call.exception())
    assert [a.content for a in answers] == [f"echo: late {n}" for n in range(4)]
    assert {a.served_by for a in answers} == {("m", f"127.0.0.1:{two.port}")}


def test_a_job_waits_no_longer_than_its_deadline_for_a_server(servers: Any, workers: Any) -> None:
    only = servers()
    only.broken = 503
    twice = [{"url": only.url, "slots": 1}, {"url": only.url, "slots": 1, "name": "again"}]
    worker = workers([{"name": "m", "servers": twice}], llm_deadline=1.5, llm_max_retries=5)
    started = time.monotonic()
    with pytest.raises(ModelServerUnavailable, match="within its deadline"):
        worker.client("m").chat(ask("hi"))
    assert time.monotonic() - started < 5


def test_a_rejected_request_is_the_callers_fault_not_the_servers(servers: Any, workers: Any) -> None:
    one, two = servers(), servers()
    one.strict_models = two.strict_models = True
    worker = workers([{"name": "m", "served_name": "nope", "servers": [{"url": one.url}, {"url": two.url}]}])
    with pytest.raises(ModelServerRejected):
        worker.client("m").chat(ask("hi"))
    assert all(s["state"] == "healthy" and s["failures"] == 0 for s in state(worker, "m").values())


def test_priorities_and_age_decide_who_gets_a_free_slot_first(servers: Any, workers: Any) -> None:
    only = servers(latency=0.2)
    worker = workers([{"name": "m", "servers": [{"url": only.url, "slots": 1}], "fallbacks": []},
                      {"name": "other", "url": only.url}])  # fmt: skip
    model = worker.client("m")
    assert not isinstance(model, PooledModel)  # one server, no fallbacks: no pool
    worker = workers([{"name": "m", "servers": [{"url": only.url, "slots": 1}], "fallbacks": ["other"],
                       "fallback_after": 3600}, {"name": "other", "url": only.url}])  # fmt: skip
    model = worker.client("m")
    order: list[str] = []
    lock = threading.Lock()

    def run(name: str, priority: int) -> None:
        content = model.chat(ask(name, priority=priority)).content
        with lock:
            order.append(content.removeprefix("echo: "))

    blocker = threading.Thread(target=run, args=("first", 5))
    blocker.start()
    time.sleep(0.05)
    threads = []
    for name, priority in [("low", 0), ("usual", 5), ("urgent", 9)]:
        threads.append(threading.Thread(target=run, args=(name, priority)))
        threads[-1].start()
        time.sleep(0.03)
    for thread in [blocker, *threads]:
        thread.join()
    assert order == ["first", "urgent", "usual", "low"]


def test_a_cancelled_job_leaves_the_line_at_once(servers: Any, workers: Any) -> None:
    only = servers(latency=1.0)
    twice = [{"url": only.url, "slots": 1}, {"url": only.url, "slots": 1, "name": "again"}]
    worker = workers([{"name": "m", "servers": twice}])
    model = worker.client("m")
    busy = [threading.Thread(target=model.chat, args=(ask("busy"),)) for _ in range(2)]
    for thread in busy:
        thread.start()
    time.sleep(0.2)
    cancel = Cancel()
    failed: list[BaseException] = []

    def waiting() -> None:
        try:
            model.chat(ask("waits"), cancel)
        except BaseException as exc:  # noqa: BLE001
            failed.append(exc)

    thread = threading.Thread(target=waiting)
    thread.start()
    time.sleep(0.2)
    started = time.monotonic()
    cancel.set()
    thread.join(5)
    assert time.monotonic() - started < 0.5  # woken, not left to its next look
    assert len(failed) == 1 and isinstance(failed[0], Cancelled)
    assert worker.pool(model.model)._redis.zcard(worker.config.keys.server_waiting("m")) == 0
    for each in busy:
        each.join()


def test_no_healthy_server_for_a_while_sends_jobs_to_the_fallback_named_in_the_answer(
    servers: Any, workers: Any
) -> None:
    main, spare = servers(), servers()
    main.broken = 500
    spare.models = ["spare-model"]
    registry = [
        {"name": "main", "servers": [{"url": main.url, "slots": 2}], "fallbacks": ["spare"], "fallback_after": 0.5},
        {"name": "spare", "url": spare.url, "served_name": "spare-model"},
    ]
    worker = workers(registry, server_failures=1)
    answer = worker.client("main").chat(ask("hi")).as_dict()
    assert answer["content"] == "echo: hi"
    assert answer["served_model"] == "spare" and answer["model"] == "spare-model"
    assert spare.completions[-1]["model"] == "spare-model"
    assert state(worker, "main")[f"127.0.0.1:{main.port}"]["state"] == "down"
    # A request that asks for no fallback waits for its own model's servers, to its deadline.
    strict = workers(registry, server_failures=1, llm_deadline=1.5)
    with pytest.raises(ModelServerUnavailable, match="within its deadline"):
        strict.client("main").chat(ask("mine only", fallbacks=[]))
    assert len(spare.completions) == 1


def test_a_long_wait_for_a_slot_falls_back_when_opted_in(servers: Any, workers: Any) -> None:
    main, spare = servers(latency=1.0), servers()
    worker = workers(
        [
            {"name": "main", "servers": [{"url": main.url, "slots": 1}], "fallbacks": ["spare"],
             "queue_fallback_after": 0.3},
            {"name": "spare", "url": spare.url},
        ]
    )  # fmt: skip
    model = worker.client("main")
    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda n: model.chat(ask(f"{n}")).as_dict(), range(3)))
    served = Counter(a["served_model"] for a in answers)
    assert served["main"] >= 1 and served["spare"] >= 1


def test_prefix_affinity_sends_a_conversation_back_to_its_server_while_it_has_a_free_slot(
    servers: Any, workers: Any
) -> None:
    system = {"role": "system", "content": "You answer questions about queues. " * 40}
    a, b = servers(latency=0.05), servers(latency=0.05)
    for server in (a, b):
        server.cached_latency = 0.005
    registry = [{"name": "m", "servers": [{"url": a.url, "slots": 4}, {"url": b.url, "slots": 4}]}]

    def hits(affinity: bool) -> tuple[int, Counter[str]]:
        a.prefix_hits = b.prefix_hits = 0
        a._cache.clear()
        b._cache.clear()
        model = workers([{**registry[0], "prefix_affinity": affinity}]).client("m")
        # 20 conversations of 3 turns: the first turn of each has nothing cached.
        conversations = [[system, {"role": "user", "content": f"topic {n}"}] for n in range(20)]

        def turn(n: int) -> str:
            return str(model.chat(ask(f"question {n}", conversations[n % 20])).served_by[1])

        with ThreadPoolExecutor(4) as pool:
            served = Counter(pool.map(turn, range(60)))
        return a.prefix_hits + b.prefix_hits, served

    with_hits, with_served = hits(True)
    without_hits, _ = hits(False)
    assert with_hits >= 36  # of 40 later turns; each spill to the other server costs one
    assert with_hits > without_hits + 8  # without, a later turn finds its server by chance
    assert len(with_served) == 2  # and both servers worked


def test_a_hot_prefix_spills_to_other_servers_when_its_server_is_full(servers: Any, workers: Any) -> None:
    system = {"role": "system", "content": "x" * 2000}
    a, b = servers(latency=0.1), servers(latency=0.1)
    worker = workers([{"name": "m", "servers": [{"url": a.url, "slots": 2}, {"url": b.url, "slots": 2}]}])
    model = worker.client("m")
    with ThreadPoolExecutor(8) as pool:
        served = Counter(pool.map(lambda n: model.chat(ask(f"{n}", [system])).served_by[1], range(24)))
    assert len(served) == 2 and min(served.values()) >= 6  # balance is kept


def test_each_server_of_a_model_gets_vllms_priority_and_its_own_key(servers: Any, workers: Any) -> None:
    one, two = servers(), servers()
    worker = workers([{"name": "m", "served_name": "fake-model", "priority_scheduling": True, "api_key": "model-key",
                       "servers": [{"url": one.url}, {"url": two.url, "api_key": "two-key"}]}])  # fmt: skip
    model = worker.client("m")
    with ThreadPoolExecutor(2) as pool:
        # Two at once: the first server is busy with one, so the other goes to the second.
        list(pool.map(lambda n: model.chat(ask(f"{n}", priority=9)), range(8)))
    bodies = one.completions + two.completions
    assert {body["priority"] for body in bodies} == {0}  # vLLM's: lower is sooner, 9 becomes 0
    assert {body["model"] for body in bodies} == {"fake-model"}
    assert one.completions and two.completions
    assert two.last_headers["authorization"] == "Bearer two-key"
    assert one.last_headers["authorization"] == "Bearer model-key"


def test_a_slow_servers_free_slot_goes_to_the_job_that_waited_least(servers: Any, workers: Any) -> None:
    # The time a slow call adds falls on the job with the least time spent already: the
    # oldest jobs wait for the fast server, whose slot comes back sooner.
    fast, slow = servers(), servers()
    worker = workers([{"name": "m", "servers": [{"url": fast.url, "slots": 1, "name": "fast"},
                                                {"url": slow.url, "slots": 1, "name": "slow"}]}])  # fmt: skip
    model = worker.registry.by_name("m")
    pool = worker.pool(model)
    worker.pool(model)._redis.hset(worker.config.keys.servers("m"), mapping={"fast|ewma": 50, "slow|ewma": 500})
    taken = [pool.try_take("holder-1", 0)[0], pool.try_take("holder-2", 0)[0]]
    assert sorted(slot.server.name for slot in taken if slot) == ["fast", "slow"]
    for waiter, accepted in (("oldest", 1), ("middle", 2), ("newest", 3)):
        assert pool.try_take(waiter, accepted)[0] is None
    on_slow = next(slot for slot in taken if slot and slot.server.name == "slow")
    on_fast = next(slot for slot in taken if slot and slot.server.name == "fast")
    pool.release(on_slow, "ok", seconds=0.5)
    assert pool.try_take("oldest", 1)[0] is None  # not for the slow server
    got = pool.try_take("newest", 3)[0]
    assert got is not None and got.server.name == "slow"
    pool.release(on_fast, "ok", seconds=0.05)
    assert pool.try_take("middle", 2)[0] is None  # the fast one is the oldest's
    got = pool.try_take("oldest", 1)[0]
    assert got is not None and got.server.name == "fast"


def test_the_wait_for_a_slot_is_told_apart_from_the_models_time(servers: Any, workers: Any) -> None:
    only = servers(latency=0.3)
    worker = workers([{"name": "m", "servers": [{"url": only.url, "slots": 1}], "fallbacks": ["other"]},
                      {"name": "other", "url": only.url}])  # fmt: skip
    model = worker.client("m")
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(model.chat, ask("first"))
        time.sleep(0.05)
        second = pool.submit(model.chat, ask("second")).result()
    # The second waited for the first's call (0.3 s, of which 0.05 s had gone) to end; the first took a free slot.
    assert second.slot_wait >= 0.25 and first.result().slot_wait < second.slot_wait


def test_a_job_waiting_without_the_server_it_failed_on_takes_it_when_it_is_the_one_back_up(
    servers: Any, workers: Any
) -> None:
    one, two = servers(), servers()
    one.chunk_delay, one.extra_words = 0.1, 30  # a 3 s answer holding one's only slot
    two.broken = 503
    worker = workers([{"name": "m", "servers": [{"url": one.url, "slots": 1}, {"url": two.url, "slots": 1}]}],
                     llm_deadline=30, server_failures=1)  # fmt: skip
    model = worker.client("m")
    names = {"one": f"127.0.0.1:{one.port}", "two": f"127.0.0.1:{two.port}"}

    def until(condition: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 10
        while not condition():
            assert time.monotonic() < deadline
            time.sleep(0.02)

    with ThreadPoolExecutor(4) as pool:
        holder = pool.submit(model.chat, ask("hold"))
        until(lambda: one.in_flight == 1)
        job = pool.submit(model.chat, ask("the job"))  # fails on two (down now), then waits for one
        until(lambda: state(worker, "m")[names["two"]]["state"] != "healthy")
        other = pool.submit(model.chat, ask("other", priority=9))  # first in line for one's slot
        time.sleep(0.3)
        pool.submit(one.stop)  # as the holder ends: the other's call to one is refused, and one is down
        assert holder.result(timeout=20).content.startswith("echo: hold")
        until(lambda: state(worker, "m")[names["one"]]["state"] != "healthy")
        two.broken = None  # the only server back up is the one the job failed on
        assert other.result(timeout=20).served_by == ("m", names["two"])
        answer = job.result(timeout=20)
    assert answer.content == "echo: the job" and answer.served_by == ("m", names["two"])


def test_tenants_waiting_for_a_slot_take_turns_by_weight_each_in_its_own_order(servers: Any, workers: Any) -> None:
    only = servers()
    worker = workers([{"name": "m", "servers": [{"url": only.url, "slots": 1}], "fallbacks": []},
                      {"name": "spare", "url": only.url}])  # fmt: skip
    pool = worker.pool(worker.registry.by_name("m"))
    usual = 4e13  # priority 5's place in line: (9 - 5) * 1e13 ms, then the time accepted
    held = pool.try_take("holder", usual)[0]
    assert held is not None
    # alpha's backlog of six came first, beta's two after; alpha weighs 3, beta 1.
    line = {f"alpha-{n}": ("alpha", 3.0, usual + n) for n in range(6)}
    line |= {f"beta-{n}": ("beta", 1.0, usual + 100 + n) for n in range(2)}
    line["alpha-urgent"] = ("alpha", 3.0, usual - 3e13 + 50)  # priority 8, accepted after the others
    for waiter, (tenant, weight, score) in line.items():
        assert pool.try_take(waiter, score, tenant=tenant, weight=weight)[0] is None
    order = []
    while line:
        pool.release(held, "ok", seconds=0.01)
        # The slot is the first in line's: each waiter asks, one gets it.
        taken = {}
        for waiter, (tenant, weight, score) in line.items():
            slot = pool.try_take(waiter, score, tenant=tenant, weight=weight)[0]
            if slot is not None:
                taken[waiter] = slot
        assert len(taken) == 1, taken
        ((waiter, held),) = taken.items()
        order.append(waiter)
        del line[waiter]
    # Priority first (the urgent job takes one of alpha's turns); then alpha's three turns
    # for beta's one, beta's first job not behind alpha's whole backlog; each tenant's own
    # jobs in the order they were accepted.
    assert order == ["alpha-urgent", "beta-0", "alpha-0", "alpha-1", "alpha-2", "beta-1", "alpha-3", "alpha-4",
                     "alpha-5"]  # fmt: skip
    assert pool._redis.zcard(worker.config.keys.server_waiting("m")) == 0


def test_a_tenants_waiter_whose_worker_died_leaves_its_tenants_line_too(servers: Any, workers: Any) -> None:
    only = servers()
    worker = workers([{"name": "m", "servers": [{"url": only.url, "slots": 1}], "fallbacks": []},
                      {"name": "spare", "url": only.url}])  # fmt: skip
    pool = worker.pool(worker.registry.by_name("m"))
    keys = worker.config.keys
    held = pool.try_take("holder", 4e13)[0]
    assert held is not None
    assert pool.try_take("alpha-gone", 4e13 + 1, tenant="alpha")[0] is None
    assert pool.try_take("beta-1", 4e13 + 2, tenant="beta")[0] is None
    pool._redis.hset(keys.server_beats("m"), "alpha-gone", 0)  # its worker stopped looking
    pool.keep(lambda server: None)
    assert pool._redis.zrange(keys.server_waiting("m"), 0, -1) == [b"beta-1"]
    assert pool._redis.zcard(keys.server_tenant_waiting("m", "alpha")) == 0
    pool.release(held, "ok", seconds=0.01)
    assert pool.try_take("beta-1", 4e13 + 2, tenant="beta")[0] is not None  # first in line now


def test_with_tenants_waiting_a_slow_servers_slot_goes_to_the_last_in_their_line_of_turns(
    servers: Any, workers: Any
) -> None:
    fast, slow = servers(), servers()
    worker = workers([{"name": "m", "servers": [{"url": fast.url, "slots": 1, "name": "fast"},
                                                {"url": slow.url, "slots": 1, "name": "slow"}]}])  # fmt: skip
    pool = worker.pool(worker.registry.by_name("m"))
    pool._redis.hset(worker.config.keys.servers("m"), mapping={"fast|ewma": 50, "slow|ewma": 500})
    taken = {
        slot.server.name: slot for slot in (pool.try_take("holder-1", 0)[0], pool.try_take("holder-2", 0)[0]) if slot
    }
    line = {"alpha-0": ("alpha", 1), "alpha-1": ("alpha", 2), "alpha-2": ("alpha", 3), "beta-0": ("beta", 4)}
    for waiter, (tenant, accepted) in line.items():
        assert pool.try_take(waiter, accepted, tenant=tenant)[0] is None
    # In turns: alpha-0, beta-0, alpha-1, alpha-2. The slow server's slot goes to the last
    # of them, alpha's third job: not beta's one, though it was accepted last.
    pool.release(taken["slow"], "ok", seconds=0.5)
    assert pool.try_take("beta-0", 4, tenant="beta")[0] is None
    got = pool.try_take("alpha-2", 3, tenant="alpha")[0]
    assert got is not None and got.server.name == "slow"
    # That was alpha's turn: the fast server's slot is beta's, the first in line now.
    pool.release(taken["fast"], "ok", seconds=0.05)
    assert pool.try_take("alpha-0", 1, tenant="alpha")[0] is None
    got = pool.try_take("beta-0", 4, tenant="beta")[0]
    assert got is not None and got.server.name == "fast"
