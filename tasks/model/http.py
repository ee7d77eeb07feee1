"""A small HTTP/1.1 client for the model server: one keep-alive connection per thread.

The worker makes one call per job, from many threads at once, to one server. The
standard library's http.client does that for a fifth of httpx's CPU per call; what
httpx adds (redirects, cookies, HTTP/2, proxies, decompression) a model server's
API does not use.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import socket
import ssl
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol
from urllib.parse import urlsplit

# Failures of a reused keep-alive connection that mean the server closed it while it
# was idle: the request never reached the server, so it is sent again on a new one.
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


class ConnectTimeout(TimeoutError):
    """The connection to the model server was not made in time."""


class Reply:
    """The status, headers and body of one answer, read as lines or whole.

    `abort()` may be called from another thread: it ends the read under way at once
    (the connection is closed), so the server sees the client leave.
    """

    def __init__(
        self,
        status: int,
        reason: str,
        headers: Mapping[str, str],
        body: io.BufferedIOBase | http.client.HTTPResponse,
        on_close: Callable[[bool], None] = lambda complete: None,
        on_abort: Callable[[], None] = lambda: None,
    ) -> None:
        self.status = status
        self.reason = reason
        self._headers = {name.lower(): value for name, value in headers.items()}
        self._body = body
        self._on_close = on_close
        self._on_abort = on_abort
        self._complete = False
        self._closed = False

    def header(self, name: str) -> str:
        return self._headers.get(name.lower(), "")

    def lines(self) -> Iterator[bytes]:
        """The body's lines, without their line ends, as they arrive."""
        while line := self._body.readline():
            yield line.rstrip(b"\r\n")
        self._complete = True

    def read(self) -> bytes:
        data = self._body.read()
        self._complete = True
        return data

    def close(self) -> None:
        """Done with the reply: its connection is kept for the next call if the body was read to its end."""
        if not self._closed:
            self._closed = True
            self._on_close(self._complete)

    def abort(self) -> None:
        self._on_abort()


class Transport(Protocol):
    """Sends one request and returns its reply (the model server, or a test's stand-in)."""

    def send(
        self,
        method: str,
        path: str,
        body: bytes | None,
        timeout: float,
        connect_timeout: float,
        headers: Mapping[str, str] | None = None,
    ) -> Reply: ...

    def close(self) -> None: ...


class HttpTransport:
    """Requests to one server (``http://`` or ``https://``), on a keep-alive connection per thread."""

    def __init__(self, base_url: str, headers: Mapping[str, str], ssl_context: ssl.SSLContext | None = None) -> None:
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) URL: {url.scheme}://{url.hostname or ''}")
        self._https = url.scheme == "https"
        self._host = url.hostname
        self._port = url.port or (443 if self._https else 80)
        self._prefix = url.path.rstrip("/")  # a server under a path: http://host/llm
        self._headers = dict(headers)
        self._ssl = ssl_context or (ssl.create_default_context() if self._https else None)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: set[http.client.HTTPConnection] = set()

    def send(
        self,
        method: str,
        path: str,
        body: bytes | None,
        timeout: float,
        connect_timeout: float,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """One request; `headers` beside the transport's own (a trace's ``traceparent``)."""
        connection = self._connection()
        sent = {**self._headers, **headers} if headers else self._headers
        for _ in range(2):
            reused = connection.sock is not None
            if not reused:
                self._connect(connection, connect_timeout)
            assert connection.sock is not None
            connection.sock.settimeout(timeout)
            try:
                connection.request(method, self._prefix + path, body=body, headers=sent)
                response = connection.getresponse()
            except _STALE:
                connection.close()
                if reused:
                    continue
                raise
            except BaseException:
                connection.close()
                raise
            return self._reply(connection, response)
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Close every thread's connection."""
        with self._lock:
            connections, self._connections = self._connections, set()
        for connection in connections:
            connection.close()

    def _connection(self) -> http.client.HTTPConnection:
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is None:
            if self._https:
                connection = http.client.HTTPSConnection(self._host, self._port, context=self._ssl)
            else:
                connection = http.client.HTTPConnection(self._host, self._port)
            self._local.connection = connection
        # Each time: after close() a thread's connection opens again on its next call,
        # and must be closed by the next close() too.
        with self._lock:
            self._connections.add(connection)
        return connection

    def _connect(self, connection: http.client.HTTPConnection, timeout: float) -> None:
        connection.timeout = timeout
        try:
            connection.connect()
        except TimeoutError:
            connection.close()
            raise ConnectTimeout(f"no connection to {self._host}:{self._port} within {timeout:g}s") from None
        except BaseException:
            connection.close()
            raise
        assert connection.sock is not None
        connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _reply(self, connection: http.client.HTTPConnection, response: http.client.HTTPResponse) -> Reply:
        sock = connection.sock

        def on_close(complete: bool) -> None:
            # A body not read to its end leaves the connection unusable for the next call.
            if not complete or not response.isclosed():
                response.close()
                connection.close()

        def on_abort() -> None:
            # From another thread: wakes the read blocked on this socket.
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

        return Reply(response.status, response.reason, dict(response.getheaders()), response, on_close, on_abort)
