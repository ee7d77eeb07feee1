"""Stream readers, as whom: the streams a tenant's clients read at once are its quota
(`streams_in_flight`, 429 past it), and the API reads every stream through a bounded
pool of Redis connections, so one tenant opening readers by the hundred neither
multiplies the API's connections to Redis nor changes another tenant's answers."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import httpx
import pytest

from shared.storage.redis_clients import API_COMMANDS, STREAM_READERS
from testing.fake_model_server import FakeModelServer
from testing.load import redis_binary, wait_until
from testing.processes import RedisServer
from tests.conftest import StackFactory

pytestmark = pytest.mark.integration

TENANTS = """
tenants:
  - name: alpha
    keys: ["key-alpha"]
  - name: beta
    keys: ["key-beta"]
    quotas: {streams_in_flight: 100}
"""
READERS = 150


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def status_of(url: str, key: str) -> int:
    """The status a stream's reader is answered (it leaves at once)."""
    with httpx.stream("GET", url, headers=auth(key), timeout=10) as answer:
        return answer.status_code


def connections_to(pid: int, port: int) -> int:
    """How many TCP connections process `pid` holds open to `port` on this machine."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                remote, state, inode = fields[2], fields[3], fields[9]
                if state == "01" and inode in inodes and int(remote.rsplit(":", 1)[1], 16) == port:
                    count += 1
    return count


def test_hostile_tenant_beside_normal_reads_its_streams_within_its_quota_on_bounded_connections(
    make_stack: StackFactory, fake: FakeModelServer, broker_env: dict[str, str], tmp_path: Path
) -> None:
    if not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("once is enough: a stream is read from Redis the same on either broker")
    keys_file = tmp_path / "tenants.yaml"
    keys_file.write_text(TENANTS)
    server = RedisServer(redis_binary(broker_env), tmp_path / "redis").start()
    try:
        stack = make_stack(API_KEYS_FILE=str(keys_file), REDIS_HOST="127.0.0.1", REDIS_PORT=str(server.port))
        api = stack.processes.started[-1].popen.pid
        url = f"{stack.url}/v1/responses"
        # beta's one background response, long at the model server, read by many clients at once.
        fake.latency = 60
        made = httpx.post(url, json={"input": "long", "background": True}, headers=auth("key-beta"), timeout=30)
        assert made.status_code == 200, made.text
        response = f"{url}/{made.json()['id']}?stream=true"
        opened: list[int] = []
        refused: list[str] = []
        seen: dict[str, object] = {}
        release = asyncio.Event()

        async def reader(client: httpx.AsyncClient) -> None:
            async with client.stream("GET", response, headers=auth("key-beta")) as answer:
                opened.append(answer.status_code)
                if answer.status_code == 429:
                    refused.append((await answer.aread()).decode())
                    return
                await release.wait()

        async def scenario() -> None:
            limits = httpx.Limits(max_connections=READERS + 10)
            async with httpx.AsyncClient(timeout=60, limits=limits) as client:
                readers = [asyncio.create_task(reader(client)) for _ in range(READERS)]
                await asyncio.to_thread(wait_until, lambda: len(opened) == READERS, 60, "every reader's answer")
                await asyncio.sleep(1)  # the readers poll their stream meanwhile
                seen["connections"] = connections_to(api, server.port)
                # alpha's requests, beside them, answered and billed for alpha's own tokens.
                fake.latency = 0
                ask = {"model": "fake-model", "messages": [{"role": "user", "content": "alpha asks"}]}
                seen["chat"] = await client.post(
                    f"{stack.url}/v1/chat/completions", json=ask, headers=auth("key-alpha")
                )
                seen["stream"] = await client.post(
                    url, json={"input": "alpha streams", "stream": True}, headers=auth("key-alpha")
                )
                # ... while beta's readers all still wait on its response, which still runs.
                status = await client.get(f"{url}/{made.json()['id']}", headers=auth("key-beta"))
                seen["beta"] = status.json()["status"]
                release.set()
                await asyncio.gather(*readers)

        asyncio.run(scenario())
        assert seen["beta"] == "in_progress"
        assert sorted(opened).count(200) == 100 and len(refused) == READERS - 100, sorted(set(opened))
        assert all("quota streams_in_flight" in text and "'beta'" in text for text in refused)
        # The readers' pool and the commands' (and the waiter's one connection, the
        # fair-share dispatcher's): not one more per reader.
        assert seen["connections"] <= STREAM_READERS + API_COMMANDS + 3, seen["connections"]
        chat = seen["chat"]
        assert isinstance(chat, httpx.Response) and chat.status_code == 200
        assert chat.json()["choices"][0]["message"]["content"] == "echo: alpha asks"
        streamed = seen["stream"]
        assert isinstance(streamed, httpx.Response) and streamed.status_code == 200
        assert '"text":"echo: alpha streams"' in streamed.text
        (completed,) = [
            line for line in streamed.text.splitlines() if line.startswith('data: {"type":"response.completed"')
        ]
        used = chat.json()["usage"]["total_tokens"] + json.loads(completed[6:])["response"]["usage"]["total_tokens"]
        days = httpx.get(f"{stack.url}/usage", headers=auth("key-alpha"), timeout=10).json()["data"]
        assert {d["tenant"] for d in days} == {"alpha"}
        assert (sum(d["jobs"] for d in days), sum(d["total_tokens"] for d in days)) == (2, used)
        # The readers gone, beta's places are free again.
        wait_until(lambda: status_of(response, "key-beta") == 200, 10, "beta's places to be free")
        assert httpx.delete(f"{url}/{made.json()['id']}", headers=auth("key-beta"), timeout=10).status_code == 200
    finally:
        server.stop()
