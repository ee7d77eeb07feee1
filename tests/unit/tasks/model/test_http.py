"""The model server's HTTP client: a reply read as lines or whole, its connection kept
only when the body was read to its end, one keep-alive connection per thread."""

from __future__ import annotations

import http.server
import io
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tasks.model.http import HttpTransport, Reply

pytestmark = pytest.mark.unit


def test_a_reply_reads_its_lines_without_line_ends_and_its_headers_by_any_case() -> None:
    closed: list[bool] = []
    reply = Reply(200, "OK", {"Content-Type": "text/event-stream"}, io.BytesIO(b"a\r\nb\n\nc"), closed.append)
    assert reply.header("content-type") == reply.header("CONTENT-TYPE") == "text/event-stream"
    assert reply.header("retry-after") == ""
    assert list(reply.lines()) == [b"a", b"b", b"", b"c"]
    reply.close()
    reply.close()
    assert closed == [True]  # once, and read to its end: its connection is kept


def test_a_reply_closed_before_its_end_gives_up_its_connection() -> None:
    closed: list[bool] = []
    reply = Reply(200, "OK", {}, io.BytesIO(b"a\nb\n"), closed.append)
    next(reply.lines())
    reply.close()
    assert closed == [False]
    whole: list[bool] = []
    read = Reply(200, "OK", {}, io.BytesIO(b"{}"), whole.append)
    assert read.read() == b"{}"
    read.close()
    assert whole == [True]


@pytest.mark.parametrize("url", ["ftp://server/x", "gpu-a:8000", "http://"])
def test_only_an_http_url_with_a_host_is_taken(url: str) -> None:
    with pytest.raises(ValueError, match="not an http"):
        HttpTransport(url, {})


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    disable_nagle_algorithm = True
    seen: list[dict[str, Any]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append({"path": self.path, "headers": dict(self.headers), "body": body, "peer": self.client_address})
        answer = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []
    handler = type("Handler", (_Handler,), {"seen": seen})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def test_requests_go_under_the_urls_path_with_both_headers_on_one_kept_connection(
    server: tuple[str, list[dict[str, Any]]],
) -> None:
    url, seen = server
    transport = HttpTransport(url + "/llm/", {"Authorization": "Bearer k"})
    try:
        for n in range(2):
            reply = transport.send("POST", "/v1/chat/completions", b"{}", 5, 5, {"traceparent": f"00-{n}"})
            assert (reply.status, reply.read()) == (200, b'{"ok": true}')
            reply.close()
    finally:
        transport.close()
    assert [request["path"] for request in seen] == ["/llm/v1/chat/completions"] * 2
    assert seen[0]["headers"]["Authorization"] == "Bearer k" and seen[1]["headers"]["traceparent"] == "00-1"
    assert seen[0]["peer"] == seen[1]["peer"]  # the same connection, kept alive
