"""Helpers of the rest_executor tests: a loopback HTTP/1.1 server that records every TCP
connection it accepts (by the client's port) and when it closes, a resolver to monkeypatch in
place of socket.getaddrinfo, and a recorder of the addresses the REST transport connects to."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

# Stands for any public address. No connection to it ever leaves the machine: the `connects`
# recorder fails it at once.
PUBLIC = "8.8.8.8"


class RecordingServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), RecordingHandler)
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        # Client port -> whether that connection is still open, in the order accepted.
        self.connections: dict[int, bool] = {}
        # (client port, method, path) of every request.
        self.requests: list[tuple[int, str, str]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def opened(self, port: int) -> None:
        with self.changed:
            self.connections[port] = True
            self.changed.notify_all()

    def closed(self, port: int) -> None:
        with self.changed:
            self.connections[port] = False
            self.changed.notify_all()

    def open_connections(self) -> list[int]:
        with self.lock:
            return [port for port, is_open in self.connections.items() if is_open]

    def wait_all_closed(self, seconds: float = 5) -> bool:
        with self.changed:
            return self.changed.wait_for(
                lambda: not any(self.connections.values()), timeout=seconds
            )


class RecordingHandler(BaseHTTPRequestHandler):
    """Keep-alive (HTTP/1.1). Paths: /bytes/N (N bytes with a length), /chunked/N (N bytes,
    chunked, no length), /drip/N/SECONDS (N one-byte chunks, SECONDS apart), /status/CODE,
    /fixed (the class attribute `body_for_tests`, set by a test); anything else echoes the
    request as JSON."""

    protocol_version = "HTTP/1.1"
    server: RecordingServer

    def setup(self) -> None:
        super().setup()
        self.server.opened(self.client_address[1])

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.closed(self.client_address[1])

    def _handle(self) -> None:
        with self.server.lock:
            self.server.requests.append((self.client_address[1], self.command, self.path))
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        parts = self.path.split("?")[0].strip("/").split("/")
        if parts[0] == "bytes":
            self._reply(200, b"x" * int(parts[1]), "application/octet-stream")
        elif parts[0] == "chunked":
            self._chunked(
                [b"x" * 16384] * (int(parts[1]) // 16384) + [b"x" * (int(parts[1]) % 16384)]
            )
        elif parts[0] == "drip":
            self._chunked([b"x"] * int(parts[1]), pause=float(parts[2]))
        elif parts[0] == "fixed":
            self._reply(200, getattr(self, "body_for_tests", b""), "application/json")
        elif parts[0] == "status":
            self._reply(int(parts[1]), b"{}")
        elif parts[0] == "set-cookie":  # a server that hands its caller a session cookie
            self.send_response(200)
            self.send_header("Set-Cookie", f"session={parts[1]}; Path=/")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")
        else:
            body = {
                "method": self.command,
                "path": self.path,
                "host": self.headers.get("Host"),
                "headers": dict(self.headers),
                "json": json.loads(raw) if raw else None,
            }
            self._reply(200, json.dumps(body).encode())

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _handle

    def do_HEAD(self) -> None:
        """The headers a GET would have: /bytes/N declares N bytes, and none is sent."""
        with self.server.lock:
            self.server.requests.append((self.client_address[1], self.command, self.path))
        parts = self.path.strip("/").split("/")
        self.send_response(200)
        self.send_header("Content-Length", parts[1] if parts[0] == "bytes" else "0")
        self.end_headers()

    def _reply(self, code: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _chunked(self, chunks: list[bytes], pause: float = 0.0) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for chunk in chunks:
                if chunk:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
                if pause:
                    time.sleep(pause)
            self.wfile.write(b"0\r\n\r\n")
        except OSError:  # the client gave up: expected when a cap or deadline is hit
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def recording_server(tls: ssl.SSLContext | None = None) -> Iterator[RecordingServer]:
    server = RecordingServer()
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


class Resolver:
    """Answers for chosen names, one answer per call (the last one repeats); every other name
    goes to the real resolver. `calls` lists the chosen names looked up, in order."""

    def __init__(self, real: Callable[..., Any]) -> None:
        self.real = real
        self.answers: dict[str, list[list[str]]] = {}
        self.calls: list[str] = []

    def answer(self, name: str, *answers: list[str]) -> None:
        self.answers[name] = list(answers)

    def __call__(
        self, host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
    ) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name not in self.answers:
            return self.real(host, port, family, type, proto, flags)
        self.calls.append(name)
        queue = self.answers[name]
        addresses = queue.pop(0) if len(queue) > 1 else queue[0]
        number = int(port or 0)
        infos = []
        for text in addresses:
            if ipaddress.ip_address(text).version == 6:
                infos.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (text, number, 0, 0)))
            else:
                infos.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (text, number)))
        return infos


def install_resolver(monkeypatch: pytest.MonkeyPatch) -> Resolver:
    resolver = Resolver(socket.getaddrinfo)
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    return resolver


def record_connects(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The address of every TCP connection opened (asyncio.open_connection, which the REST
    transport opens its sockets with), as it was asked to connect to it. Connections to
    PUBLIC fail at once, so nothing leaves the machine."""
    seen: list[str] = []
    real = asyncio.open_connection

    async def open_connection(host: str, port: int, **options: Any) -> Any:
        seen.append(host)
        if host == PUBLIC:
            raise OSError("no connection leaves the machine in these tests")
        return await real(host, port, **options)

    monkeypatch.setattr(asyncio, "open_connection", open_connection)
    return seen
