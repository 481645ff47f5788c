"""The REST client's connections and pool (connection.py, pool.py, transport.py) against a
scripted loopback server that answers exactly the bytes each test gives it: keep-alive and its
end, answers that are not well-formed, each step's timeout, and what a closed but unread
response does with its connection."""

from __future__ import annotations

import asyncio
import gzip
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from apflow_server.config import Settings
from apflow_server.execution.errors import ExecutionError
from apflow_server.execution.rest.connection import (
    PoolTimeout,
    ReadTimeout,
    RemoteProtocolError,
    Response,
    WriteTimeout,
)
from apflow_server.execution.rest.executor import RestExecutor
from apflow_server.execution.rest.transport import GuardedClient

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[bool]]


@dataclass
class Scripted:
    """A server whose `answer` writes the response to the n-th request of a connection and
    says whether to keep the connection open. It counts connections and requests."""

    answer: Answer
    port: int = 0
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    closed: int = 0

    @property
    def url(self) -> httpx.URL:
        return httpx.URL(f"http://127.0.0.1:{self.port}/x")

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            for number in range(1000):
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":", 1)[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                self.requests.append(head + await reader.readexactly(length))
                if not await self.answer(reader, writer, number):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.closed += 1
            writer.close()


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[[Answer], Awaitable[Scripted]]]:
    servers: list[asyncio.Server] = []

    async def start(answer: Answer) -> Scripted:
        script = Scripted(answer)
        server = await asyncio.start_server(script.serve, "127.0.0.1", 0)
        script.port = server.sockets[0].getsockname()[1]
        servers.append(server)
        return script

    yield start
    for server in servers:
        server.close()


def replying(*answers: bytes, keep: bool = True) -> Answer:
    """Answers the n-th request of a connection with answers[n] (the last one repeats)."""

    async def answer(_r: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
        writer.write(answers[min(n, len(answers) - 1)])
        await writer.drain()
        return keep

    return answer


@pytest.fixture
async def client() -> AsyncIterator[GuardedClient]:
    http = make_client()
    yield http
    await http.aclose()


def make_client(*, max_connections: int = 10) -> GuardedClient:
    return GuardedClient(
        allow_private=True,
        ssl_context=ssl.create_default_context(),
        max_connections=max_connections,
        max_keepalive=max_connections,
        keepalive_expiry=5.0,
    )


async def get(client: GuardedClient, server: Scripted, seconds: float = 5) -> Response:
    return await client.request("GET", server.url, headers={}, body=None, timeout=seconds)


async def body_of(client: GuardedClient, server: Scripted) -> bytes:
    response = await get(client, server)
    return await response.read(1 << 20)


async def settle() -> None:
    """Lets the loop deliver a server's close to the client's streams."""
    for _ in range(5):
        await asyncio.sleep(0.01)


# ---------------------------------------------------------------------- keep-alive


async def test_requests_share_a_kept_alive_connection(client: GuardedClient, scripted: Any) -> None:
    server = await scripted(replying(OK))
    assert [await body_of(client, server) for _ in range(3)] == [b"ok"] * 3
    assert (server.connections, len(server.requests)) == (1, 3)
    assert server.requests[0].startswith(b"GET /x HTTP/1.1\r\n")
    assert b"\r\nHost: 127.0.0.1:" in server.requests[0]


async def test_a_connection_its_server_closed_while_idle_is_not_reused(
    client: GuardedClient, scripted: Any
) -> None:
    server = await scripted(replying(OK, keep=False))  # closes after every answer
    assert await body_of(client, server) == b"ok"
    await settle()
    assert await body_of(client, server) == b"ok"
    assert server.connections == 2


async def test_connection_close_ends_keep_alive(client: GuardedClient, scripted: Any) -> None:
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    server = await scripted(replying(closing))
    assert await body_of(client, server) == b"ok"
    assert await body_of(client, server) == b"ok"
    assert server.connections == 2


async def test_a_body_delimited_by_the_close_is_read_whole(
    client: GuardedClient, scripted: Any
) -> None:
    server = await scripted(replying(b"HTTP/1.1 200 OK\r\n\r\nuntil the end", keep=False))
    assert await body_of(client, server) == b"until the end"
    assert await body_of(client, server) == b"until the end"
    assert server.connections == 2


async def test_a_chunked_body_and_an_interim_answer(client: GuardedClient, scripted: Any) -> None:
    chunked = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    server = await scripted(replying(chunked))
    assert [await body_of(client, server) for _ in range(2)] == [b"abcde"] * 2
    assert server.connections == 1


async def test_closing_an_unread_response_keeps_the_connection_only_if_the_body_arrived(
    client: GuardedClient, scripted: Any
) -> None:
    """Notification deliveries read the status only: a small answer arrives with its
    headers, so its connection is kept; one whose body is still to come is closed."""
    big = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 10
    server = await scripted(replying(OK, OK, big, OK))
    for _ in range(2):
        (await get(client, server)).close()
    assert server.connections == 1
    (await get(client, server)).close()  # the body is still on its way
    (await get(client, server)).close()
    assert server.connections == 2


async def test_an_answer_nobody_asked_for_is_never_read_as_the_next_one(
    client: GuardedClient, scripted: Any
) -> None:
    """A server that sends a second answer after the first (at once, or while the connection
    is idle) must not have it read as the answer to the next request, which may be another
    user's: the connection is dropped and the next request gets its own answer."""

    async def planted(_r: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
        writer.write(OK + b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nplant1")
        return True

    async def pushed_later(_r: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
        writer.write(OK)
        await asyncio.sleep(0.05)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nplant2")
        return True

    for answer in (planted, pushed_later):
        server = await scripted(answer)
        assert await body_of(client, server) == b"ok"
        await asyncio.sleep(0.1)
        assert await body_of(client, server) == b"ok"
        assert server.connections == 2


# ---------------------------------------------------------------------- bad answers


@pytest.mark.parametrize(
    "answer",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nBad Header Line\r\n\r\n",
    ],
)
async def test_an_answer_that_is_not_http_is_a_protocol_error(
    client: GuardedClient, scripted: Any, answer: bytes
) -> None:
    server = await scripted(replying(answer))
    with pytest.raises(RemoteProtocolError):
        await body_of(client, server)


async def test_a_server_that_closes_without_answering(client: GuardedClient, scripted: Any) -> None:
    async def hang_up(_r: asyncio.StreamReader, _w: asyncio.StreamWriter, _n: int) -> bool:
        return False

    server = await scripted(hang_up)
    with pytest.raises(RemoteProtocolError, match="closed the connection"):
        await get(client, server)


async def test_a_body_cut_short_is_a_protocol_error(client: GuardedClient, scripted: Any) -> None:
    server = await scripted(
        replying(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", keep=False)
    )
    with pytest.raises(RemoteProtocolError):
        await body_of(client, server)


# ---------------------------------------------------------------------- timeouts


async def test_a_server_that_never_answers_is_a_read_timeout(
    client: GuardedClient, scripted: Any
) -> None:
    async def silent(reader: asyncio.StreamReader, _w: asyncio.StreamWriter, _n: int) -> bool:
        await reader.read()  # until the client gives up
        return False

    server = await scripted(silent)
    with pytest.raises(ReadTimeout, match=r"the server sent nothing within 0\.2 s"):
        await get(client, server, seconds=0.2)


async def test_waiting_for_a_free_connection_is_a_pool_timeout(scripted: Any) -> None:
    http = make_client(max_connections=1)
    try:
        server = await scripted(replying(OK))
        held = await get(http, server)
        with pytest.raises(PoolTimeout):
            await get(http, server, seconds=0.2)
        held.close()  # frees the one connection
        assert await body_of(http, server) == b"ok"
        assert server.connections == 1
    finally:
        await http.aclose()


async def test_a_server_that_stops_reading_cannot_hold_a_connection_slot(
    scripted: Any,
) -> None:
    """A large body to a server that reads nothing times out while writing, and the slot is
    free at once (a graceful close would wait for the server to read the rest)."""

    async def reads_nothing(_r: asyncio.StreamReader, _w: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    stalled = await asyncio.start_server(reads_nothing, "127.0.0.1", 0)
    port = stalled.sockets[0].getsockname()[1]
    http = make_client(max_connections=1)
    try:
        started = asyncio.get_running_loop().time()
        with pytest.raises(WriteTimeout):
            await http.request(
                "POST",
                httpx.URL(f"http://127.0.0.1:{port}/"),
                headers={},
                body=b"x" * 50_000_000,
                timeout=0.5,
            )
        assert asyncio.get_running_loop().time() - started < 3
        server = await scripted(replying(OK))
        assert await body_of(http, server) == b"ok"  # the one slot is free
    finally:
        await http.aclose()
        stalled.close()


# ---------------------------------------------------------------------- through rest_executor


async def test_task_headers_replace_the_defaults_whatever_their_case(
    scripted: Any, tmp_path: Path
) -> None:
    latin = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=latin-1\r\n" + (
        b"X-Many: a\r\nX-Many: b\r\nContent-Length: 4\r\n\r\ncaf\xe9"
    )
    server = await scripted(replying(latin))
    settings = Settings(home=tmp_path, database_url="sqlite://", rest_allow_private_urls=True)
    executor = RestExecutor(settings)
    try:
        inputs = {"url": str(server.url), "headers": {"user-agent": "mine", "accept": "a/b"}}
        result = await executor(inputs, None)  # type: ignore[arg-type]
    finally:
        await executor.aclose()
    sent = server.requests[0].lower()
    assert sent.count(b"user-agent:") == 1 and b"user-agent: mine\r\n" in sent
    assert sent.count(b"accept:") == 1 and b"accept: a/b\r\n" in sent
    assert result["body"] == "café"
    assert result["headers"]["x-many"] == "a, b"


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s",
            {"n": 1},
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=rot13\r\n\r\nabc", "abc"),
        (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=nonesuch\r\n\r\n\xc3\xa9", "é"),
    ],
)
async def test_compressed_and_oddly_labelled_bodies(
    scripted: Any, tmp_path: Path, answer: bytes, expected: Any
) -> None:
    if b"%d" in answer:
        packed = gzipped(b'{"n": 1}')
        answer = answer % (len(packed), packed)
    server = await scripted(replying(answer, keep=False))
    settings = Settings(home=tmp_path, database_url="sqlite://", rest_allow_private_urls=True)
    executor = RestExecutor(settings)
    try:
        result = await executor({"url": str(server.url)}, None)  # type: ignore[arg-type]
    finally:
        await executor.aclose()
    assert result["body"] == expected


async def test_a_compressed_body_is_capped_once_decompressed(scripted: Any, tmp_path: Path) -> None:
    packed = gzipped(b"x" * 100_000)  # about 100 bytes on the wire
    head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n"
    server = await scripted(replying(head % len(packed) + packed))
    settings = Settings(
        home=tmp_path,
        database_url="sqlite://",
        rest_allow_private_urls=True,
        rest_max_response_bytes=50_000,
    )
    executor = RestExecutor(settings)
    try:
        with pytest.raises(ExecutionError, match="the response body exceeds 50000 bytes"):
            await executor({"url": str(server.url)}, None)  # type: ignore[arg-type]
    finally:
        await executor.aclose()
