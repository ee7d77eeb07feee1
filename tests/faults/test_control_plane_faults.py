"""The control plane's database (PostgreSQL) stopped under load, and started again.

A server of the test's own (testing/postgres_server.py), stopped as an operator's
restart stops it (``pg_ctl stop -m fast``): the machine's PostgreSQL, which other test
processes share, is never touched. Two API processes and a worker serve projects' keys
made through the Administration API; while the database is away every request is
answered (200, its own answer; streams and WebSocket turns too), admin calls get 503 naming the control plane's database
(never its address or password), and once it is back what was made before is there and
new changes reach both processes.
"""

from __future__ import annotations

import asyncio
import os
import time
from itertools import cycle

import httpx
import openai
import pytest

from api.tenancy.control_sync import CALL_SECONDS
from testing.fake_model_server import FakeModelServer, free_port
from testing.load import Tally, brief, ids, is_answer, wait_until
from testing.openai_sdk import admin_client, chat_line, jsonl
from testing.postgres_server import PASSWORD, PostgresServer, postgres_bin
from testing.tcp_proxy import TcpProxy
from tests.conftest import StackFactory

pytestmark = pytest.mark.fault

ADMIN_KEY = "sk-admin-fault-1f2e3d4c5b6a79880f1e2d3c4b5a6978"
UNAVAILABLE = "control plane database unavailable"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def spread(jobs: list[str], urls: list[str], keys: list[str]) -> dict[str, tuple[str, str]]:
    """Each job's API process and key: every key on every process in turn."""
    return dict(zip(jobs, cycle([(url, key) for key in keys for url in urls]), strict=False))


async def post_with_keys(routes: dict[str, tuple[str, str]], concurrency: int, tally: Tally) -> None:
    """Send each job (as ``/generate``) to its API process with its key, and wait for its
    answer, `concurrency` at a time."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency, keepalive_expiry=2.0)
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=90, limits=limits) as client:

        async def one(job: str) -> None:
            url, key = routes[job]
            async with gate:
                try:
                    body = {"job_id": job, "content": f"q {job}"}
                    tally.answers[job] = await client.post(f"{url}/generate", json=body, headers=auth(key))
                except httpx.HTTPError as exc:
                    tally.answers[job] = exc
                tally.finished[job] = time.monotonic()

        await asyncio.gather(*(one(job) for job in routes))


def database_gauge(url: str) -> str:
    """The API process's ``llm_api_part_up{part="database"}``, as /metrics shows it."""
    text = httpx.get(f"{url}/metrics", headers=auth(ADMIN_KEY), timeout=10).text
    (line,) = [line for line in text.splitlines() if line.startswith('llm_api_part_up{model="",part="database"}')]
    return line.split()[-1]


def works(url: str, key: str) -> int:
    return httpx.get(f"{url}/v1/files", headers=auth(key), timeout=10).status_code


def test_the_control_plane_database_stopped_under_load_fails_no_request(
    make_stack: StackFactory, fake: FakeModelServer, broker_env: dict[str, str]
) -> None:
    if not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("once is enough: the control plane is the same whichever the broker")
    binaries = postgres_bin()
    if binaries is None:
        if os.environ.get("REQUIRE_POSTGRES"):
            pytest.fail("PostgreSQL's initdb is not installed, and REQUIRE_POSTGRES is set")
        pytest.skip("PostgreSQL's initdb is not installed (Debian's postgresql package; .ci/run installs it)")
    server = PostgresServer(binaries).start()
    try:
        stack = make_stack(
            workers=1, concurrency=16, ADMIN_API_KEYS=ADMIN_KEY, CONTROL_DATABASE_URL=server.url,
            CONTROL_POLL_SECONDS="0.5",
        )  # fmt: skip
        port = free_port()
        second = stack.processes.api(stack.env, port)
        apis = [process for process in stack.processes.started if process.name == "api"]
        urls = [stack.url, f"http://127.0.0.1:{port}"]
        admin = admin_client(stack.url, ADMIN_KEY).admin.organization

        # Before: three projects with a key each; a fourth key made and deleted.
        projects = [admin.projects.create(name=f"team {n}") for n in range(3)]
        keys = []
        for project in projects:
            made = admin.projects.service_accounts.create(project.id, name="bot")
            assert made.api_key
            keys.append(made.api_key.value)
        revoked = admin.projects.service_accounts.create(projects[0].id, name="leaver")
        assert revoked.api_key
        admin.projects.api_keys.delete(revoked.api_key.id, project_id=projects[0].id)
        for url in urls:
            wait_until(lambda url=url: all(works(url, key) == 200 for key in keys), 5, "the keys on every process")

        fake.latency = 0.2
        outage: dict[str, float] = {}
        refused: list[httpx.Response] = []
        gauges: dict[str, list[str]] = {}
        streamed: list[str] = []

        def stop_and_start() -> None:
            wait_until(lambda: len(fake.completions) >= 30, 30, "jobs to run")
            server.stop()
            outage["stopped"] = time.monotonic()
            # Each process finds it gone at its next poll, and says so once.
            wait_until(lambda: all(UNAVAILABLE in api.output() for api in apis), 10, "the APIs to find it gone")
            gauges["away"] = [database_gauge(url) for url in urls]
            asked = time.monotonic()
            for url in urls:
                with httpx.Client(base_url=url, headers=auth(ADMIN_KEY), timeout=30) as client:
                    refused.append(client.post("/v1/organization/projects", json={"name": "while away"}))
                    refused.append(client.get("/v1/organization/projects"))
                    refused.append(client.post(f"/v1/organization/projects/{projects[1].id}/service_accounts",
                                               json={"name": "while away"}))  # fmt: skip
                    refused.append(client.delete(f"/v1/organization/projects/{projects[2].id}/api_keys/key_x"))
            outage["admin_seconds"] = time.monotonic() - asked
            # A stream, and a WebSocket connection's response, of a project's key meanwhile.
            for n, (url, key) in enumerate(zip(urls, keys, strict=False)):
                sdk = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=30,
                                    _strict_response_validation=True)  # fmt: skip
                with sdk.chat.completions.create(
                    model="fake-model", messages=[{"role": "user", "content": f"stream {n}"}], stream=True
                ) as stream:
                    streamed.append("".join(c.choices[0].delta.content or "" for c in stream if c.choices))
                with sdk.responses.connect() as connection:
                    connection.response.create(model="fake-model", input=f"socket {n}", store=False)
                    for event in connection:
                        if event.type in ("response.completed", "response.failed", "error"):
                            streamed.append(event.response.output_text if event.type != "error" else repr(event))
                            break
            time.sleep(3)  # the load goes on against processes whose database is away
            server.start()
            outage["started"] = time.monotonic()
            wait_until(lambda: all("control plane database back" in api.output() for api in apis), 10,
                       "the APIs to find it back")  # fmt: skip
            gauges["back"] = [database_gauge(url) for url in urls]

        tally = Tally()
        routes = spread(ids("pg", 400), urls, keys)

        async def scenario() -> None:
            load = asyncio.create_task(post_with_keys(routes, 32, tally))
            await asyncio.to_thread(stop_and_start)
            await load

        asyncio.run(scenario())
        away = [job for job, at in tally.finished.items() if outage["stopped"] < at < outage["started"]]
        tally.report(
            "control plane database stopped", fake, admin_calls_refused=len(refused), answered_while_away=len(away)
        )

        # No request failed for it, and the load was running while it was away.
        wrong = {
            job: f"{brief(answer)} at {tally.finished[job] - outage['stopped']:+.2f}s from the stop"
            for job, answer in tally.answers.items()
            if not is_answer(answer, job)
        }
        assert not wrong, f"{len(wrong)} of {len(tally.answers)} requests not answered: {dict(list(wrong.items())[:5])}"
        assert len(away) >= 20, f"only {len(away)} requests answered while the database was away"
        for job in list(routes)[::20]:  # stored as its project's, whichever process asks
            url, key = routes[job]
            stored = httpx.get(f"{urls[1] if url == urls[0] else urls[0]}/jobs/{job}", headers=auth(key), timeout=10)
            assert stored.json()["status"] == "succeeded", brief(stored)

        assert streamed == ["echo: stream 0", "echo: socket 0", "echo: stream 1", "echo: socket 1"], streamed
        # Admin calls meanwhile: 503, saying which part is away, never where it is.
        assert refused and all(answer.status_code == 503 for answer in refused), [brief(a) for a in refused]
        assert outage["admin_seconds"] < 10, "admin calls waited on a database that was away"
        for answer in refused:
            message = answer.json()["error"]["message"]
            assert UNAVAILABLE in message
            assert str(server.port) not in message and "127.0.0.1" not in message and PASSWORD not in message
        assert all(PASSWORD not in api.output() for api in apis)
        # /metrics said so (what LLMApiDatabaseDown fires on), and that it came back.
        assert gauges == {"away": ["0.0", "0.0"], "back": ["1.0", "1.0"]}

        # Back: what was made before is there, on both processes; what was deleted stays so.
        listed = {project.id for project in admin.projects.list(limit=100)}
        assert {project.id for project in projects} <= listed and len(listed) == len(projects) + 1  # and default
        for url in urls:
            assert [works(url, key) for key in keys] == [200] * len(keys)
            assert works(url, revoked.api_key.value) == 401
        # New changes work again, and reach the other process within a second.
        later = admin.projects.service_accounts.create(projects[1].id, name="after")
        assert later.api_key
        started = time.monotonic()
        wait_until(lambda: works(urls[1], later.api_key.value) == 200, 5, "the new key on the other process")
        assert time.monotonic() - started < 1.0
        admin_client(urls[1], ADMIN_KEY).admin.organization.projects.archive(projects[2].id)
        wait_until(lambda: works(urls[0], keys[2]) == 401, 1, "the archived project's key refused")
        assert second.popen.poll() is None
    finally:
        server.remove()


def test_a_control_plane_database_that_hangs_slows_no_request_and_admin_calls_are_answered_in_time(
    make_stack: StackFactory, fake: FakeModelServer, broker_env: dict[str, str]
) -> None:
    # Not refused but silent (a network dropping its packets, a server hung): each call
    # to it waits, on the control plane's own threads, and is given up after CALL_SECONDS.
    if not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("once is enough: the control plane is the same whichever the broker")
    binaries = postgres_bin()
    if binaries is None:
        if os.environ.get("REQUIRE_POSTGRES"):
            pytest.fail("PostgreSQL's initdb is not installed, and REQUIRE_POSTGRES is set")
        pytest.skip("PostgreSQL's initdb is not installed (Debian's postgresql package; .ci/run installs it)")
    server = PostgresServer(binaries).start()
    try:
        with TcpProxy(("127.0.0.1", server.port)) as proxy:
            url = server.url.replace(f":{server.port}/", f":{proxy.port}/")
            stack = make_stack(workers=1, ADMIN_API_KEYS=ADMIN_KEY, CONTROL_DATABASE_URL=url,
                               CONTROL_POLL_SECONDS="0.5")  # fmt: skip
            admin = admin_client(stack.url, ADMIN_KEY).admin.organization
            project = admin.projects.create(name="hung")
            made = admin.projects.service_accounts.create(project.id, name="bot")
            assert made.api_key
            key = made.api_key.value
            lines = jsonl([chat_line("1", "hi")])
            upload = httpx.post(f"{stack.url}/v1/files", headers=auth(key), timeout=10,
                                data={"purpose": "batch"}, files={"file": ("in.jsonl", lines)})  # fmt: skip
            assert upload.status_code == 200, brief(upload)

            proxy.hold()
            held = time.monotonic()

            async def meanwhile() -> tuple[list[tuple[httpx.Response, float]], list[float]]:
                async with httpx.AsyncClient(base_url=stack.url, timeout=60) as client:

                    async def admin_call(n: int) -> tuple[httpx.Response, float]:
                        started = time.monotonic()
                        answer = await client.get("/v1/organization/projects", headers=auth(ADMIN_KEY))
                        return answer, time.monotonic() - started

                    async def usage_call() -> tuple[httpx.Response, float]:
                        started = time.monotonic()
                        asked = {"start_time": int(time.time()) - 86_400, "bucket_width": "1h"}
                        answer = await client.get("/v1/organization/usage/completions", params=asked,
                                                  headers=auth(ADMIN_KEY))  # fmt: skip
                        return answer, time.monotonic() - started

                    async def served(n: int) -> float:
                        await asyncio.sleep(0.5 + n * 0.2)  # while the admin calls wait
                        started = time.monotonic()
                        body = {"job_id": f"hung-{n}", "content": "hi"}
                        for answer in (
                            await client.get("/v1/files", headers=auth(key)),
                            await client.get(f"/v1/files/{upload.json()['id']}/content", headers=auth(key)),
                            await client.post("/generate", json=body, headers=auth(key)),
                        ):
                            assert answer.status_code == 200, brief(answer)
                        return time.monotonic() - started

                    admins = [asyncio.create_task(admin_call(n)) for n in range(12)]
                    admins += [asyncio.create_task(usage_call()) for _ in range(3)]
                    serving = await asyncio.gather(*(served(n) for n in range(5)))
                    return list(await asyncio.gather(*admins)), serving

            admins, serving = asyncio.run(meanwhile())
            # Requests (files, jobs) went on at their pace while a dozen admin calls waited.
            assert max(serving) < 1.5, f"requests waited on the hung database: {serving}"
            # Each admin call (usage reports too) answered 503 within CALL_SECONDS and a little, not hung.
            for answer, seconds in admins:
                assert answer.status_code == 503 and UNAVAILABLE in answer.json()["error"]["message"], brief(answer)
                assert seconds < CALL_SECONDS + 5, f"an admin call took {seconds:.1f}s"
            api = stack.processes.started[-1]
            wait_until(lambda: UNAVAILABLE in api.output(), CALL_SECONDS + 5, "the poll to find it unanswering")

            proxy.release()
            print(f"\n[control plane database hung] {time.monotonic() - held:.1f}s; requests took at most"
                  f" {max(serving):.2f}s; admin calls answered 503 after {max(s for _, s in admins):.1f}s")  # fmt: skip
            wait_until(lambda: "control plane database back" in api.output(), 30, "the API to find it back")
            later = admin.projects.service_accounts.create(project.id, name="after")
            assert later.api_key and works(stack.url, later.api_key.value) == 200
            assert works(stack.url, key) == 200
    finally:
        server.remove()
