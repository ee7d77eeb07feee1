"""The model-server client against a real HTTP server (the fake one, in a thread)."""

from __future__ import annotations

import base64
import socket
import threading
import time
from typing import Any

import pytest

from shared.config import Config
from shared.contract import ModelServerFailed
from tasks.model import ChatRequest, ModelClient

pytestmark = pytest.mark.integration


def test_a_thread_keeps_its_connection_to_the_model_server(fake: Any) -> None:
    # A streamed answer read only up to [DONE] would close the connection, and every
    # job would pay for a new one (as would threads queueing on one shared pool).
    client = ModelClient(Config(_env_file=None, inner_llm_url=fake.url))  # type: ignore[call-arg]
    request = ChatRequest(messages=[{"role": "user", "content": "hi"}], temperature=0.2, tokens_limit=8)
    try:
        answers = [client.chat(request).as_dict()["content"] for _ in range(5)]
        threads = [threading.Thread(target=client.chat, args=(request,)) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        client.close()
    assert answers == ["echo: hi"] * 5
    assert len(fake.completions) == 8
    assert len(fake.clients) == 4  # this thread's connection, and one per other thread


class OneShotServer:
    """An HTTP server that answers one request per connection, then closes it without
    saying so (as a server does whose keep-alive timeout ran out), recording each
    request's first line and headers."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            with connection, connection.makefile("rb") as reader:
                line = reader.readline().decode().strip()
                headers = {}
                while (header := reader.readline().decode().strip()) != "":
                    name, _, value = header.partition(":")
                    headers[name.lower()] = value.strip()
                reader.read(int(headers.get("content-length", 0)))
                self.requests.append((line, headers))
                body = b'{"choices": [{"index": 0, "message": {"content": "once"}, "finish_reason": "stop"}]}'
                connection.sendall(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    + f"content-length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                time.sleep(0.05)  # the client reads the answer before the connection goes

    def close(self) -> None:
        self.listener.close()


def test_a_connection_the_server_closed_while_idle_is_replaced() -> None:
    server = OneShotServer()
    url = server.url.replace("http://", "http://user:p%40ss@") + "/llm"
    client = ModelClient(Config(_env_file=None, inner_llm_url=url, llm_max_retries=0))  # type: ignore[call-arg]
    request = ChatRequest(messages=[{"role": "user", "content": "hi"}], temperature=0.2, tokens_limit=8, model="m")
    try:
        answers = [client.chat(request).content for _ in range(3)]
    finally:
        client.close()
        server.close()
    # No retries allowed: each call after the first found its connection closed by the
    # server, and was sent again on a new one without counting as an attempt.
    assert answers == ["once"] * 3
    assert server.connections == 3
    # A server under a path, with credentials in its URL.
    assert [line for line, _ in server.requests] == ["POST /llm/v1/chat/completions HTTP/1.1"] * 3
    assert server.requests[0][1]["authorization"] == "Basic " + base64.b64encode(b"user:p@ss").decode()


def test_an_answer_cut_off_mid_stream_is_a_failure_not_a_short_answer() -> None:
    # A server killed or restarted between two chunks closes its connection cleanly: the
    # stream just ends, without a finish_reason or [DONE]. What came is not the answer.
    listener = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    chunk = b'data: {"choices": [{"index": 0, "delta": {"content": "half an"}}]}\n\n'

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with connection, connection.makefile("rb") as reader:
                while reader.readline().strip():
                    pass
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                                   b"Transfer-Encoding: chunked\r\n\r\n" + f"{len(chunk):x}\r\n".encode() + chunk
                                   + b"\r\n0\r\n\r\n")  # fmt: skip

    threading.Thread(target=serve, daemon=True).start()
    client = ModelClient(Config(_env_file=None, inner_llm_url=url, llm_max_retries=0))  # type: ignore[call-arg]
    request = ChatRequest(messages=[{"role": "user", "content": "hi"}], temperature=0.2, tokens_limit=8)
    try:
        with pytest.raises(ModelServerFailed, match="ended before it was complete"):
            client.chat(request)
    finally:
        client.close()
        listener.close()
