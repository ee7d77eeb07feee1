"""Jobs people can rely on: one job per job_id, status, asynchronous submission, retention."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import pytest
import redis
from celery import Celery

from api.jobs.queue import JobQueue
from shared import contract
from tasks.result_store import ResultStore
from tasks.settings import worker_settings
from testing.fake_model_server import Failure, FakeModelServer, free_port
from testing.processes import wait_for_output
from tests.conftest import Stack, StackFactory

pytestmark = pytest.mark.integration


def when(stamp: str) -> datetime:
    moment = datetime.fromisoformat(stamp)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def poll(url: str, until: set[str], seconds: float = 20) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        status = httpx.get(url, timeout=10).json()
        if status["status"] in until or time.monotonic() > deadline:
            return status
        time.sleep(0.05)


def test_concurrent_duplicates_on_two_api_processes_run_once(make_stack: StackFactory, fake: FakeModelServer) -> None:
    stack = make_stack()
    second_port = free_port()
    stack.processes.api(stack.env, second_port)
    apis = [stack.url, f"http://127.0.0.1:{second_port}"]
    fake.latency = 0.5
    body = {"job_id": "twin-1", "content": "only once", "meta": {"temperature": 0}}

    async def all_at_once() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(*(client.post(f"{apis[i % 2]}/generate", json=body) for i in range(50)))

    answers = asyncio.run(all_at_once())
    assert [a.status_code for a in answers] == [200] * 50
    assert {a.json()["content"] for a in answers} == {"echo: only once"}
    assert len(fake.completions) == 1
    # Again after it finished: the stored answer, still one model call.
    assert httpx.post(f"{apis[1]}/generate", json=body, timeout=30).json()["content"] == "echo: only once"
    assert len(fake.completions) == 1
    conflict = httpx.post(f"{apis[0]}/generate", json={**body, "content": "something else"}, timeout=30)
    assert conflict.status_code == 409
    assert "twin-1" in conflict.json()["detail"] and "another body" in conflict.json()["detail"]
    assert len(fake.completions) == 1
    # Published once: the worker never met a second message of it (it would have
    # waited for the first run, or found its answer, and said so).
    worker = stack.processes.started[0].output()
    assert "job twin-1 is running elsewhere" not in worker and "job twin-1 already answered" not in worker


def test_queued_jobs_show_their_position_then_run_and_succeed(make_stack: StackFactory, fake: FakeModelServer) -> None:
    stack = make_stack(workers=0)
    fake.latency = 1.0
    locations = []
    for index in range(3):
        answer = httpx.post(f"{stack.url}/generate?wait=0", json={"job_id": f"q-{index}", "content": f"n{index}"})
        assert answer.status_code == 202
        assert answer.json()["job_id"] == f"q-{index}"
        assert answer.json()["tenant"] == "default"
        # Relative (PUBLIC_BASE_URL unset): never the Host header the client sent.
        assert answer.headers["location"] == answer.json()["status_url"] == f"/jobs/q-{index}"
        locations.append(f"{stack.url}{answer.headers['location']}")
    statuses = [httpx.get(url).json() for url in locations]
    assert [(s["status"], s["queue_position"]) for s in statuses] == [("queued", 1), ("queued", 2), ("queued", 3)]
    assert fake.completions == []
    # The same job sent again is the same job: answered 202, and not queued a second time.
    again = httpx.post(f"{stack.url}/generate?wait=0", json={"job_id": "q-1", "content": "n1"})
    assert again.status_code == 202 and f"{stack.url}{again.headers['location']}" == locations[1]
    queue = JobQueue(stack.config)
    try:
        assert queue.depths([stack.config.queue_name]) == {stack.config.queue_name: 3}
    finally:
        queue.close()

    stack.processes.worker(stack.env)
    running = poll(locations[0], {"running", "succeeded"})
    assert running["status"] == "running"
    assert running["queue_position"] is None and running["result"] is None
    done = poll(locations[0], {"succeeded", "failed"})
    assert done["status"] == "succeeded"
    assert done["result"]["content"] == "echo: n0"
    assert when(done["accepted_at"]) <= when(done["started_at"]) <= when(done["finished_at"])


def test_prefer_respond_async_answers_202(stack: Stack, fake: FakeModelServer) -> None:
    answer = httpx.post(
        f"{stack.url}/chat_completion",
        json={"job_id": "prefer-1", "messages": [{"role": "user", "content": "later"}]},
        headers={"Prefer": "respond-async"},
    )
    assert answer.status_code == 202
    done = poll(f"{stack.url}{answer.headers['location']}", {"succeeded", "failed"})
    assert done["result"]["content"] == "echo: later"


def test_a_short_wait_gives_504_and_the_result_is_collected_later(stack: Stack, fake: FakeModelServer) -> None:
    fake.latency = 1.5
    answer = httpx.post(f"{stack.url}/generate?wait=0.2", json={"job_id": "slow-2", "content": "patience"}, timeout=30)
    assert answer.status_code == 504
    assert "slow-2" in answer.json()["detail"] and "/jobs/slow-2" in answer.json()["detail"]
    assert answer.headers["location"] == "/jobs/slow-2"
    done = poll(f"{stack.url}/jobs/slow-2", {"succeeded", "failed"})
    assert done["result"]["content"] == "echo: patience"
    # Asking again with the same job_id collects it without a second model call.
    again = httpx.post(f"{stack.url}/generate", json={"job_id": "slow-2", "content": "patience"}, timeout=30)
    assert again.json()["content"] == "echo: patience"
    assert len(fake.completions) == 1


def test_a_failed_jobs_status_carries_the_error(stack: Stack, fake: FakeModelServer) -> None:
    fake.failures = [Failure(400, {"error": {"message": "top_k must be positive"}})]
    assert httpx.post(f"{stack.url}/generate", json={"job_id": "bad-1", "content": "x"}, timeout=30).status_code == 400
    status = httpx.get(f"{stack.url}/jobs/bad-1").json()
    assert status["status"] == "failed"
    assert status["error"] == {"type": "ModelServerRejected", "message": "top_k must be positive", "status_code": 400}
    assert status["result"] is None and status["finished_at"]


def test_unknown_job_is_404(stack: Stack) -> None:
    answer = httpx.get(f"{stack.url}/jobs/never-seen")
    assert answer.status_code == 404
    assert "never-seen" in answer.json()["detail"]


def test_jobs_expire_with_their_keys(make_stack: StackFactory, fake: FakeModelServer) -> None:
    stack = make_stack(RESULT_TTL="1", LLM_DEADLINE="1", JOB_LEASE="3", WAIT_TIMEOUT="2")
    assert (
        httpx.post(f"{stack.url}/generate", json={"job_id": "brief-1", "content": "x"}, timeout=30).status_code == 200
    )
    # Its result may be gone already (a 1 s TTL on a busy machine): then so is all of it,
    # and it is unknown; never "running" again after it was answered.
    status = httpx.get(f"{stack.url}/jobs/brief-1")
    assert status.status_code == 404 or status.json()["status"] == "succeeded", status.text
    config = stack.config
    store = redis.Redis(host=config.redis_host, port=config.redis_port)
    deadline = time.monotonic() + 20
    while store.exists(config.keys.job("brief-1"), config.keys.result("brief-1"), config.keys.queued):
        assert time.monotonic() < deadline, "job keys outlived their TTL"
        time.sleep(0.25)
    assert httpx.get(f"{stack.url}/jobs/brief-1").status_code == 404
    assert list(store.scan_iter(match=f"{config.key_prefix}*brief-1*")) == []


def test_a_cancelled_queued_job_never_reaches_the_model_server(make_stack: StackFactory, fake: FakeModelServer) -> None:
    stack = make_stack(workers=0)
    for job_id in ("cancel-me", "keep-me"):
        assert httpx.post(f"{stack.url}/generate?wait=0", json={"job_id": job_id, "content": job_id}).status_code == 202
    cancelled = httpx.delete(f"{stack.url}/jobs/cancel-me")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled" and cancelled.json()["finished_at"]
    assert httpx.get(f"{stack.url}/jobs/keep-me").json()["queue_position"] == 1

    stack.processes.worker(stack.env)
    # keep-me was queued after cancel-me: once it is done, the worker has seen both.
    assert poll(f"{stack.url}/jobs/keep-me", {"succeeded"})["status"] == "succeeded"
    assert [c["messages"][0]["content"] for c in fake.completions] == ["keep-me"]
    assert httpx.get(f"{stack.url}/jobs/cancel-me").json()["status"] == "cancelled"
    # Asking for the cancelled job again answers that it was cancelled.
    again = httpx.post(f"{stack.url}/generate", json={"job_id": "cancel-me", "content": "cancel-me"}, timeout=30)
    assert again.status_code == 409 and "cancelled" in again.json()["detail"]


def test_a_cancelled_running_job_stops_and_its_caller_is_answered(stack: Stack, fake: FakeModelServer) -> None:
    fake.chunk_delay = 0.05
    fake.extra_words = 400  # a 20 s answer

    async def scenario() -> tuple[httpx.Response, httpx.Response, int]:
        async with httpx.AsyncClient(base_url=stack.url, timeout=60) as client:
            waiting = asyncio.create_task(client.post("/generate", json={"job_id": "long-1", "content": "go on"}))
            while fake.in_flight == 0:  # noqa: ASYNC110 - the fake server runs in another thread
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)  # a few chunks in
            cancel = await client.delete("/jobs/long-1")
            answer = await waiting
            for _ in range(100):  # the model server sees the connection close
                if fake.disconnects:
                    break
                await asyncio.sleep(0.05)
            return cancel, answer, fake.disconnects

    cancel, answer, disconnects = asyncio.run(scenario())
    assert cancel.status_code == 200 and cancel.json()["status"] == "cancelled"
    assert cancel.json()["started_at"] is not None
    assert answer.status_code == 409 and "long-1 was cancelled" in answer.json()["detail"]
    assert disconnects == 1 and fake.completed_streams == 0
    assert httpx.get(f"{stack.url}/jobs/long-1").json()["status"] == "cancelled"


def test_a_cancelled_job_stops_its_model_server_even_in_a_long_pause(stack: Stack, fake: FakeModelServer) -> None:
    # A server that sends nothing for a long while (a long prompt's prefill): the
    # worker, waiting for its next chunk, must close the connection at once, not once
    # the next chunk comes (the server would go on generating until then).
    fake.stall_after, fake.stall = 2, 30.0
    answer = httpx.post(f"{stack.url}/generate?wait=0", json={"job_id": "pause-1", "content": "think"})
    assert answer.status_code == 202
    wait_until(lambda: fake.stalling == 1, 10, "the model server to pause")
    cancel = httpx.delete(f"{stack.url}/jobs/pause-1")
    assert cancel.status_code == 200 and cancel.json()["status"] == "cancelled"
    # Seen by the server while it still pauses: the connection was closed, not left to the next chunk.
    wait_until(lambda: fake.disconnects_while_stalled == 1, 10, "the model server to see the connection close")
    assert fake.completed_streams == 0


def test_a_late_answer_never_overwrites_a_cancellation(stack: Stack, fake: FakeModelServer) -> None:
    # A cancellation the worker does not hear of in time (its listener reconnecting,
    # or the cancel landing as the answer is stored): the worker stores its answer,
    # and the cancellation, stored first, must stay.
    fake.latency = 1.0
    assert httpx.post(f"{stack.url}/generate?wait=0", json={"job_id": "unheard-1", "content": "x"}).status_code == 202
    wait_until(lambda: fake.in_flight == 1, 10, "the job to run")
    config = stack.config
    store = redis.Redis(host=config.redis_host, port=config.redis_port)
    now = time.time()
    keys = [config.keys.job("unheard-1"), config.keys.queued, config.keys.result("unheard-1"), "nobody-listens"]
    args = [repr(now), config.job_ttl, "unheard-1", contract.cancelled_result("unheard-1", now), 60]
    assert store.eval(contract.CANCEL, 4, *keys, *args) == b"cancelled"
    worker = stack.processes.started[0]
    wait_until(lambda: '"job done", "job_id": "unheard-1"' in worker.output(), 10, "the worker to finish the job")
    time.sleep(0.5)  # its answer is stored after the task returns
    assert httpx.get(f"{stack.url}/jobs/unheard-1").json()["status"] == "cancelled"


def wait_until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_cancelling_a_finished_or_unknown_job(stack: Stack, fake: FakeModelServer) -> None:
    assert httpx.post(f"{stack.url}/generate", json={"job_id": "done-1", "content": "x"}, timeout=30).status_code == 200
    finished = httpx.delete(f"{stack.url}/jobs/done-1")
    assert finished.status_code == 409 and "succeeded" in finished.json()["detail"]
    assert httpx.get(f"{stack.url}/jobs/done-1").json()["status"] == "succeeded"
    assert httpx.delete(f"{stack.url}/jobs/nobody").status_code == 404


def test_a_job_handed_out_again_after_its_answer_is_not_run_again(stack: Stack, fake: FakeModelServer) -> None:
    # A worker that dies after storing the answer, before acknowledging the message,
    # leaves the broker to hand the job out again. It must not run (nor store) twice.
    answer = httpx.post(f"{stack.url}/generate", json={"job_id": "again-1", "content": "once"}, timeout=30)
    assert answer.status_code == 200
    queue = JobQueue(stack.config)
    try:
        job = {"content": "once", "meta": {"temperature": 0.2}}
        asyncio.run(queue.submit("llm.generate", "again-1", job))
    finally:
        queue.close()
    worker = stack.processes.started[0]
    wait_for_output(worker, "job again-1 already answered: not run again")
    assert len(fake.completions) == 1
    status = httpx.get(f"{stack.url}/jobs/again-1", timeout=10).json()
    assert status["status"] == "succeeded"
    assert status["result"]["content"] == answer.json()["content"]


def test_a_job_refused_yet_run_is_answered_when_sent_again(stack: Stack, fake: FakeModelServer) -> None:
    # A publish whose confirm never came (RabbitMQ stopped under it) is refused with
    # 503 and its claim released, though the message reached the broker and ran. The
    # same job sent again is queued anew: the worker finds the answer and announces it
    # again, and the caller gets it instead of waiting out its wait.
    first = httpx.post(f"{stack.url}/generate", json={"job_id": "ran-1", "content": "refused"}, timeout=30)
    assert first.status_code == 200
    store = redis.Redis(host=stack.config.redis_host, port=stack.config.redis_port)
    # As the API releases a claim it could not queue: the run that followed kept none.
    result = stack.config.keys.result("ran-1")
    store.set(
        result, json.dumps({k: v for k, v in json.loads(store.get(result)).items() if k != "claim"}), keepttl=True
    )
    again = httpx.post(f"{stack.url}/generate?wait=10", json={"job_id": "ran-1", "content": "refused"}, timeout=30)
    assert again.status_code == 200 and again.json()["content"] == first.json()["content"]
    assert len(fake.completions) == 1
    assert store.zscore(stack.config.keys.queued, "ran-1") is None  # not counted as waiting


def test_the_first_result_stored_for_a_job_stays(stack: Stack) -> None:
    # What a second run of a job (or a worker finishing a job cancelled meanwhile)
    # would store never replaces the result its callers were given.
    app = Celery("results-test", set_as_current=False)
    app.conf.update(worker_settings(stack.config))
    backend = app.backend
    assert isinstance(backend, ResultStore)
    listener = redis.Redis(host=stack.config.redis_host, port=stack.config.redis_port).pubsub()
    listener.subscribe(stack.config.keys.result("once-1"))
    backend.store_result("once-1", {"content": "first"}, "SUCCESS")
    backend.store_result("once-1", {"content": "second"}, "SUCCESS")
    backend.store_result("once-1", RuntimeError("late failure"), "FAILURE")
    assert backend.get_task_meta("once-1")["result"] == {"content": "first"}
    published = []
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        message = listener.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if message:
            published.append(message["data"])
    assert len(published) == 1 and b'"first"' in published[0]
    listener.close()
    app.close()


def test_a_result_keeps_its_answer_and_claim_for_result_ttl_and_publishes_its_run_too(stack: Stack) -> None:
    # The worker's result backend: what it publishes to the requests awaiting the job,
    # what it keeps, and what Celery's own readers (a Python client) get back.
    app = Celery("results-test", set_as_current=False)
    app.conf.update(worker_settings(stack.config))
    backend = app.backend
    assert isinstance(backend, ResultStore)
    config, job = stack.config, "kept-1"
    store = redis.Redis(host=config.redis_host, port=config.redis_port)
    claim = [config.keys.job(job), config.keys.queued, config.keys.result(job)]
    store.register_script(contract.CLAIM)(keys=claim, args=["fp", "llm.generate", "1.5", config.job_ttl, job, 10, ""])
    listener = store.pubsub()
    listener.subscribe(config.keys.result(job))
    assert listener.get_message(timeout=2)["type"] == "subscribe"
    choice = {"index": 0, "content": "hi", "finish_reason": "stop"}
    answer = {"content": "hi", "finish_reason": "stop", "model": "m", "choices": [choice], "timing": {"run_seconds": 1}}
    backend.store_result(job, answer, "SUCCESS")
    heard = json.loads(listener.get_message(timeout=2)["data"])
    assert heard["result"]["timing"] == {"run_seconds": 1} and heard["task_id"] == job
    stored = json.loads(store.get(config.keys.result(job)))
    assert stored["result"] == {"model": "m", "choices": [choice]}  # the text once, no timing
    assert stored["claim"] == {"fingerprint": "fp", "accepted_at": "1.5"} and not store.exists(config.keys.job(job))
    assert config.result_ttl - 60 < store.ttl(config.keys.result(job)) <= config.result_ttl
    meta = backend.get_task_meta(job)
    assert meta["result"] == {k: v for k, v in answer.items() if k != "timing"} and "claim" not in meta
    listener.close()
    app.close()
