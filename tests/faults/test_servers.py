"""A model served by several servers, through the whole gateway on both brokers: shares
that follow the servers' speeds, a server killed and started again, one answering
500s, every server down and then one back, a fallback model taken and named, and a
server and a worker killed under load. Each prints its counts (pytest -s)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from testing.fake_model_server import FakeModelServer
from testing.load import Tally, ids, post_all, under_load, wait_until
from tests.conftest import Stack, StackFactory

pytestmark = pytest.mark.fault


def registry(*models: dict[str, Any]) -> str:
    return json.dumps({"models": list(models)})


def name(server: FakeModelServer) -> str:
    return f"127.0.0.1:{server.port}"


def scaling(stack: Stack, model: str = "m") -> dict[str, Any]:
    answer = httpx.get(f"{stack.url}/scaling", timeout=10)
    assert answer.status_code == 200, answer.text
    return {server["name"]: server for server in answer.json()["models"][model]["servers"]}


def under_load_for(url: str, seconds: float, concurrency: int, meanwhile: Callable[[], None]) -> Tally:
    """Each of `concurrency` callers sends a job and, answered, the next, for `seconds`,
    while `meanwhile` runs."""
    tally = Tally()
    stop = time.monotonic() + seconds

    async def caller(n: int) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=90) as client:
            count = 0
            while time.monotonic() < stop:
                job = f"c{n}-{count}"
                count += 1
                try:
                    tally.answers[job] = await client.post("/generate", json={"job_id": job, "content": f"q {job}"})
                except httpx.HTTPError as exc:
                    tally.answers[job] = exc

    async def run() -> None:
        await asyncio.gather(*(caller(n) for n in range(concurrency)), asyncio.to_thread(meanwhile))

    asyncio.run(run())
    return tally


def test_a_servers_share_of_the_jobs_follows_its_speed(make_stack: StackFactory, servers: Any) -> None:
    fast, slow = servers(latency=0.1), servers(latency=1.0)
    models = registry({"name": "m", "servers": [{"url": fast.url, "slots": 4}, {"url": slow.url, "slots": 4}]})
    stack = make_stack(MODELS=models, concurrency=32)
    seen: dict[str, tuple[int, float]] = {}

    def count() -> None:
        # Read halfway through a round of the slow server's calls (they start together
        # and take 1 s): 9 rounds done, none half counted.
        time.sleep(9.5)
        seen.update(fast=(fast.answered, fast.busy_seconds), slow=(slow.answered, slow.busy_seconds))

    tally = under_load_for(stack.url, 11, 16, count)  # 16 callers for 8 slots: both servers always busy
    tally.assert_all_answered(stack, stored=False)
    (fast_jobs, fast_busy), (slow_jobs, slow_busy) = seen["fast"], seen["slow"]
    ratio = fast_jobs / slow_jobs
    # Their speeds as they delivered them (a busy machine slows the fast one's calls most):
    # equal slots, so the ratio of their mean call times.
    speeds = (slow_busy / slow_jobs) / (fast_busy / fast_jobs)
    print(f"\n[shares] fast={fast_jobs} slow={slow_jobs} ratio={ratio:.2f} speed ratio={speeds:.2f}")
    assert abs(ratio - speeds) <= 0.15 * speeds  # a server's share follows its speed, within 15 %
    assert fast.peak_in_flight <= 4 and slow.peak_in_flight <= 4
    shown = scaling(stack)
    assert shown[name(fast)]["jobs"] == fast.answered and shown[name(slow)]["jobs"] == slow.answered


def test_a_server_killed_under_load_costs_no_job_and_rejoins_when_started_again(
    make_stack: StackFactory, servers: Any
) -> None:
    steady, flaky = servers(latency=0.05), servers(latency=0.05)
    models = registry({"name": "m", "servers": [{"url": steady.url, "slots": 4}, {"url": flaky.url, "slots": 4}]})
    stack = make_stack(MODELS=models, concurrency=16, SERVER_PROBE_BACKOFF="0.2", SERVER_PROBE_MAX="0.5")
    port = flaky.port

    def fault() -> None:
        wait_until(lambda: flaky.answered >= 20, 30, "the flaky server's first jobs")
        flaky.stop()  # killed with calls in flight: their connections drop
        wait_until(lambda: scaling(stack)[name(flaky)]["state"] == "down", 30, "the server marked down")
        time.sleep(1)
        flaky.__init__(port)  # type: ignore[misc]  # the same server started again, as a restart does
        flaky.latency = 0.05
        flaky.start()
        wait_until(lambda: scaling(stack)[name(flaky)]["state"] == "healthy", 30, "the server back")
        wait_until(lambda: flaky.answered >= 10, 30, "jobs on the server again")

    tally = under_load(stack.url, ids("kill", 600), 12, fault)
    tally.report("server killed", steady, flaky_after=flaky.answered)
    tally.assert_all_answered(stack)  # no job failed while the other server was up


def test_a_server_answering_500s_is_drained_probed_and_back(make_stack: StackFactory, servers: Any) -> None:
    good, sick = servers(latency=0.02), servers(latency=0.02)
    sick.broken = 500
    models = registry({"name": "m", "servers": [{"url": sick.url, "slots": 4}, {"url": good.url, "slots": 4}]})
    stack = make_stack(MODELS=models, concurrency=16, SERVER_PROBE_BACKOFF="0.2", SERVER_PROBE_MAX="0.5")
    tally = Tally()
    asyncio.run(post_all(stack.url, ids("sick", 60), 8, tally))
    tally.assert_all_answered(stack)
    shown = scaling(stack)[name(sick)]
    assert shown["state"] == "down" and shown["failures"] >= 3 and "500" in shown["last_failure"]
    metrics = httpx.get(f"{stack.url}/metrics", timeout=10).text
    assert f'llm_api_model_server_state{{model="m",server="{name(sick)}",state="down"}} 1.0' in metrics
    worker = next(p for p in stack.processes.started if p.name.startswith("worker"))
    assert f"model server {name(sick)} of m is down" in worker.output()
    sick.broken = None
    wait_until(lambda: scaling(stack)[name(sick)]["state"] == "healthy", 30, "the server probed back")
    assert f"model server {name(sick)} of m is up again" in worker.output()
    before = sick.answered
    tally = Tally()
    asyncio.run(post_all(stack.url, ids("well", 60), 8, tally))
    tally.assert_all_answered(stack)
    assert sick.answered > before


def test_every_server_down_the_jobs_wait_and_are_answered_when_one_comes_back(
    make_stack: StackFactory, servers: Any
) -> None:
    one, two = servers(), servers()
    models = registry({"name": "m", "servers": [{"url": one.url, "slots": 2}, {"url": two.url, "slots": 2}]})
    stack = make_stack(MODELS=models, SERVER_FAILURES="1", SERVER_PROBE_BACKOFF="0.2", SERVER_PROBE_MAX="0.5")
    one.broken = two.broken = 503
    # The first jobs find both servers failing: they go down, and those jobs then wait.
    tally = Tally()

    def fault() -> None:
        wait_until(lambda: all(s["state"] == "down" for s in scaling(stack).values()), 30, "both servers down")

        # /ready answers from checks made in the background: it says so within a round.
        def says_down() -> bool:
            ready = httpx.get(f"{stack.url}/ready", timeout=10)
            return ready.status_code == 503 and "no server of model m answers" in json.dumps(ready.json())

        wait_until(says_down, 30, "/ready to name the model without a server")
        time.sleep(1)
        assert not tally.answers  # none failed at once: they wait within their deadline
        two.broken = None

    tally = under_load(stack.url, ids("down", 10), 10, fault)
    tally.assert_all_answered(stack)
    wait_until(lambda: httpx.get(f"{stack.url}/ready", timeout=10).status_code == 200, 30, "/ready to say 200")


def test_a_fallback_model_serves_when_the_model_has_no_server_and_says_so(
    make_stack: StackFactory, servers: Any
) -> None:
    main, spare = servers(), servers()
    spare.models = ["spare-model"]
    main.broken = 500
    models = registry(
        {"name": "m", "servers": [{"url": main.url, "slots": 2}], "fallbacks": ["spare"], "fallback_after": 0.5},
        {"name": "spare", "url": spare.url, "served_name": "spare-model"},
    )
    stack = make_stack(MODELS=models, SERVER_FAILURES="1", LLM_DEADLINE="3")
    answer = httpx.post(
        f"{stack.url}/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-served-model"] == "spare"
    assert answer.json()["model"] == "spare-model"
    assert answer.json()["choices"][0]["message"]["content"] == "echo: hi"
    # A request that asks for none waits for its own model, to its deadline (LLM_DEADLINE).
    refused = httpx.post(
        f"{stack.url}/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "mine"}], "disable_fallbacks": True},
        timeout=60,
    )
    assert refused.status_code == 502 and "no server of model m took the job within its deadline" in refused.text
    unknown = httpx.post(
        f"{stack.url}/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "x"}], "fallbacks": ["nope"]},
        timeout=60,
    )
    assert unknown.status_code == 404 and "fallbacks" in unknown.text
    usage = httpx.get(f"{stack.url}/usage", timeout=10).json()["data"]
    assert [(row["model"], row["jobs"]) for row in usage if row["jobs"]] == [("spare", 1)]


def test_a_server_and_a_worker_killed_under_load_every_accepted_job_answered_once(
    make_stack: StackFactory, servers: Any
) -> None:
    one, two = servers(latency=0.05), servers(latency=0.05)
    port = two.port
    models = registry({"name": "m", "servers": [{"url": one.url, "slots": 4}, {"url": two.url, "slots": 4}]})
    stack = make_stack(MODELS=models, workers=2, concurrency=8, SERVER_PROBE_BACKOFF="0.2", SERVER_PROBE_MAX="0.5",
                       JOB_LEASE="6")  # fmt: skip

    def fault() -> None:
        wait_until(lambda: one.answered + two.answered >= 50, 30, "the first jobs")
        two.stop()
        worker = next(p for p in stack.processes.started if p.name.startswith("worker"))
        os.kill(worker.popen.pid, signal.SIGKILL)
        time.sleep(2)
        two.__init__(port)  # type: ignore[misc]
        two.latency = 0.05
        two.start()

    tally = under_load(stack.url, ids("chaos", 400), 12, fault)
    tally.report("server and worker killed", one, two=two.answered)
    tally.assert_all_answered(stack)


def test_the_openai_sdk_streamed_and_not_and_a_batch_on_a_model_with_two_servers(
    make_stack: StackFactory, servers: Any
) -> None:
    from testing import openai_sdk

    one, two = servers(latency=0.01), servers(latency=0.01)
    spare = servers()
    one.broken = 503  # the first is down from the start: every job goes to the second
    models = registry(
        {"name": "m", "servers": [{"url": one.url, "slots": 2}, {"url": two.url, "slots": 2}], "fallbacks": ["spare"]},
        {"name": "spare", "url": spare.url},
    )
    stack = make_stack(MODELS=models, SERVER_FAILURES="1")
    sdk = openai_sdk.client(stack)
    raw = sdk.chat.completions.with_raw_response.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert raw.parse().choices[0].message.content == "echo: hi"
    assert raw.headers["x-served-model"] == "m"  # its own model, not a fallback
    pieces = [
        chunk.choices[0].delta.content or ""
        for chunk in sdk.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "one two three"}], stream=True,
            extra_body={"fallbacks": ["spare"]},
        )
        if chunk.choices
    ]  # fmt: skip
    assert "".join(pieces) == "echo: one two three"
    lines = [openai_sdk.chat_line(f"line-{n}", f"batch {n}") | {"body": {"model": "m", "messages": [
        {"role": "user", "content": f"batch {n}"}]}} for n in range(6)]  # fmt: skip
    batch = sdk.batches.create(
        input_file_id=openai_sdk.upload(sdk, lines), endpoint="/v1/chat/completions", completion_window="24h"
    )
    done = openai_sdk.wait_until_finished(sdk, batch.id)
    assert done.status == "completed" and done.request_counts is not None and done.request_counts.completed == 6
    answers = {line["custom_id"]: line["response"]["body"]["choices"][0]["message"]["content"]
               for line in openai_sdk.file_lines(sdk, done.output_file_id)}  # fmt: skip
    assert answers == {f"line-{n}": f"echo: batch {n}" for n in range(6)}
    assert two.answered == 8 and spare.answered == 0
