"""A real webhook receiver on loopback for the notification tests: records every request and
answers with scripted statuses (then 200), optionally after a delay."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    headers: dict[str, str]
    body: str
    at: float


class _Server(ThreadingHTTPServer):
    # The listen backlog: socketserver's default of 5 drops the connections of a dispatcher
    # opening dozens at once (their SYNs are retried after a second, past a short test timeout,
    # and the attempts count as failed).
    request_queue_size = 256


@dataclass
class Receiver:
    statuses: list[int] = field(default_factory=list)  # answered in turn, then 200
    delay: float = 0.0  # seconds before answering the first `delayed` requests
    delayed: int = 0
    requests: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length).decode()
                with receiver._lock:
                    receiver.requests.append(
                        Received({k.lower(): v for k, v in self.headers.items()}, body, time.time())
                    )
                    index = len(receiver.requests)
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                if index <= receiver.delayed:
                    time.sleep(receiver.delay)
                self.send_response(status)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def wait_for(self, count: int, seconds: float = 10.0) -> list[Received]:
        """From a test that runs no event loop (the service runs in another process)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.requests) >= count:
                    return list(self.requests)
            time.sleep(0.02)
        raise AssertionError(f"{len(self.requests)} request(s) arrived, expected {count}")

    async def arrival(self, count: int, seconds: float = 10.0) -> list[Received]:
        """From an async test, whose event loop runs the dispatcher meanwhile."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.requests) >= count:
                    return list(self.requests)
            await asyncio.sleep(0.02)
        raise AssertionError(f"{len(self.requests)} request(s) arrived, expected {count}")
