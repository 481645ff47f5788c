"""The HTTP sink of the real-work benchmarks: a small asyncio HTTP/1.1 server in its own process
that records when each request arrives, by its own clock.

    python bench/sink.py --port 8901

`GET /hit?i=INDEX&due=UNIX_SECONDS` answers 200 `ok` and records (i, due, arrival); `POST
/hook` (a notification delivery, its body read by Content-Length) records (n, 0, arrival). `GET
/__count` answers how many hits arrived; `GET /__dump` answers every record as JSON. Keep-alive
is honoured, and requests are parsed only as far as the request line and the headers' end (the
benchmarks send no bodies), so one process serves tens of thousands of requests a second: the
sink is not what a benchmark measures. Standard library only: the peers' virtual environments
use it too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from urllib.parse import parse_qs, urlsplit

RECORDS: list[tuple[int, float, float]] = []  # (index, due, arrival)
OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"


def answer(body: bytes, content_type: bytes = b"application/json") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: "
        + content_type
        + b"\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


class Sink(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        arrival = time.time()
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, rest = self.buffer.split(b"\r\n\r\n", 1)
            length = _content_length(head)
            if len(rest) < length:
                return  # the body has not all arrived
            self.buffer = rest[length:]
            target = head.split(b"\r\n", 1)[0].split(b" ")[1].decode()
            self.transport.write(self.respond(target, arrival))

    def respond(self, target: str, arrival: float) -> bytes:
        parts = urlsplit(target)
        if parts.path == "/hit":
            query = parse_qs(parts.query)
            RECORDS.append((int(query["i"][0]), float(query["due"][0]), arrival))
            return OK
        if parts.path == "/hook":  # a notification delivery (a POST with a body)
            RECORDS.append((len(RECORDS), 0.0, arrival))
            return OK
        if parts.path == "/__count":
            return answer(str(len(RECORDS)).encode())
        if parts.path == "/__dump":
            return answer(json.dumps(RECORDS).encode())
        return b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Sink, "127.0.0.1", port, backlog=4096)
    print(f"READY {port}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
