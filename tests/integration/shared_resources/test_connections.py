"""The API's connections and the bandwidth into it, as whom: an upload refused on its
headers (no key, or a path that takes none) is not read past a small bound, and its
connection ends with the answer, so that a keyless caller cannot fill the gateway's
network and event loop with bytes beside a tenant's requests; a tenant's WebSocket
connections are bounded per API process, beside another tenant's."""

from __future__ import annotations

import contextlib
import errno
import json
import select
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from testing.fake_model_server import FakeModelServer
from testing.load import wait_until
from tests.conftest import Stack, StackFactory

pytestmark = pytest.mark.integration

TENANTS = """
tenants:
  - name: alpha
    keys: ["alpha-key"]
  - name: beta
    keys: ["beta-key"]
"""
ANNOUNCED = 10 * 1024**3  # 10 GB in Content-Length
SENT_AT_MOST = 200 * 1024 * 1024  # the most an uploader of the test sends
# What the gateway reads of a refused stranger's body (1 MiB), plus what the two kernels'
# socket buffers take in before the connection ends; far below what it used to read.
READ_AT_MOST = 40 * 1024 * 1024


def keyed_stack(make_stack: StackFactory, broker_env: dict[str, str], tmp_path: Path) -> Stack:
    if not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("once is enough: the connections of the API do not depend on the broker")
    keys = tmp_path / "tenants.yaml"
    keys.write_text(TENANTS)
    return make_stack(API_KEYS_FILE=str(keys))


def upload(url: str, path: str) -> tuple[bytes, int, bool]:
    """A keyless upload of 10 GB announced, sent until the server ends the connection (or
    SENT_AT_MOST): (the answer's head, the bytes of body sent, whether the server ended it)."""
    host, port = url.removeprefix("http://").split(":")
    chunk = b"x" * 65536
    sent, answer, ended = 0, b"", False
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {ANNOUNCED}\r\n"
            "Content-Type: application/octet-stream\r\n\r\n".encode()
        )
        conn.setblocking(False)
        deadline = time.monotonic() + 60
        while not ended and time.monotonic() < deadline:
            readable, writable, _ = select.select([conn], [conn] if sent < SENT_AT_MOST else [], [], 1.0)
            try:
                if readable:
                    got = conn.recv(65536)
                    answer += got
                    ended = not got
                if writable and not ended:
                    sent += conn.send(chunk)
            except OSError as exc:  # the server closed with bytes of ours unread: a reset
                if exc.errno not in (errno.ECONNRESET, errno.EPIPE):
                    raise
                ended = True
            if sent >= SENT_AT_MOST and not readable and b"\r\n\r\n" in answer:
                break  # everything sent and still open: the server keeps reading
    return answer.split(b"\r\n\r\n")[0], sent, ended


def tenant_answers(url: str, key: str, count: int) -> list[tuple[int, str, dict[str, int]]]:
    answers = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
        for n in range(count):
            body = {"messages": [{"role": "user", "content": f"question {n}"}], "max_tokens": 20}
            answer = client.post("/v1/chat/completions", json=body)
            data = answer.json()
            answers.append((answer.status_code, data["choices"][0]["message"]["content"], data["usage"]))
    return answers


def test_hostile_tenant_beside_normal_one_keyless_uploads_are_cut_off(
    make_stack: StackFactory, broker_env: dict[str, str], fake: FakeModelServer, tmp_path: Path
) -> None:
    stack = keyed_stack(make_stack, broker_env, tmp_path)
    alone = tenant_answers(stack.url, "alpha-key", 5)
    assert all(status == 200 for status, _, _ in alone)
    # Keyless uploads of 10 GB each, three at once, to an endpoint (401) and to a path
    # that does not exist (404), while alpha asks again.
    results: dict[str, tuple[bytes, int, bool]] = {}
    paths = {"files": "/v1/files", "chat": "/v1/chat/completions", "nowhere": "/no/such/path"}

    def run(name: str, path: str) -> None:
        results[name] = upload(stack.url, path)

    threads = [threading.Thread(target=run, args=item) for item in paths.items()]
    for thread in threads:
        thread.start()
    beside = tenant_answers(stack.url, "alpha-key", 5)
    for thread in threads:
        thread.join(90)
    assert beside == alone  # the same answers, and the same tokens billed
    for name, (head, sent, ended) in results.items():
        assert ended, f"{name}: the connection stayed open after {sent} bytes"
        assert sent < READ_AT_MOST, f"{name}: {sent} bytes of a refused upload were taken in"
        # The answer went out before the connection ended. An uploader that goes on sending
        # past what the gateway reads gets the closed socket's reset, which may reach it
        # before it read the answer: its kernel then drops the answer unread. A client that
        # waits for the answer reads it (test_isolation.py: an upload refused on its headers, `Expect: 100-continue`).
        if head:
            status = b"404" if name == "nowhere" else b"401"
            assert head.startswith(b"HTTP/1.1 " + status), (name, head[:200])
            assert b"connection: close" in head.lower(), (name, head)
    # The gateway still serves: the refused connections held nothing.
    with contextlib.closing(httpx.Client(base_url=stack.url, timeout=30)) as client:
        assert client.get("/health").status_code == 200


def test_hostile_tenant_beside_normal_one_websocket_connections_are_bounded_per_tenant(
    make_stack: StackFactory, broker_env: dict[str, str], fake: FakeModelServer, tmp_path: Path
) -> None:
    # Each WebSocket connection to /v1/responses keeps a conversation in the API process's
    # memory: one tenant holding many open neither refuses nor changes another's.
    if not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("once is enough: the connections of the API do not depend on the broker")
    keys = tmp_path / "tenants.yaml"
    keys.write_text(TENANTS)
    stack = make_stack(API_KEYS_FILE=str(keys), RESPONSES_WEBSOCKETS_PER_TENANT="3")
    url = f"{stack.url.replace('http', 'ws', 1)}/v1/responses"

    def connection(key: str) -> ClientConnection:
        return connect(url, additional_headers={"Authorization": f"Bearer {key}"}, open_timeout=10)

    def answer(socket: ClientConnection) -> str:
        socket.send(json.dumps({"type": "response.create", "model": "m", "input": "hello", "store": False}))
        while (event := json.loads(socket.recv(timeout=30)))["type"] != "response.completed":
            assert event["type"] != "error", event
        return event["response"]["output"][0]["content"][0]["text"]

    with connection("alpha-key") as socket:
        alone = answer(socket)
    with contextlib.ExitStack() as held:
        hostile = [held.enter_context(connection("beta-key")) for _ in range(3)]
        with pytest.raises(InvalidStatus) as refused:
            connection("beta-key")
        assert refused.value.response.status_code == 429
        assert b"RESPONSES_WEBSOCKETS_PER_TENANT" in refused.value.response.body
        with connection("alpha-key") as socket:  # alpha's place is its own
            assert answer(socket) == alone
        hostile[0].close()
        # A closed connection gives its place back (as the server sees it closed).
        again: list[ClientConnection] = []

        def admitted() -> bool:
            try:
                again.append(held.enter_context(connection("beta-key")))
            except InvalidStatus as exc:
                assert exc.response.status_code == 429
                return False
            return True

        wait_until(admitted, 20, "beta's closed connection to give its place back")
        assert answer(again[0]) == alone
