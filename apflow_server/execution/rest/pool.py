"""rest_executor's connection pool: HTTP/1.1 connections (connection.py), kept per origin.

httpcore's pool re-examined every connection it held whenever a request started or a response
ended: with a hundred pooled connections that bookkeeping took 40 % of a scheduler's CPU in a
burst of HTTP calls. Here a request costs the same however many connections are pooled:
concurrent requests are bounded by a semaphore, and idle connections wait per origin on a
stack, the most recently used on top (the likeliest to still be open; an expired one, or one
its server closed, is dropped when it comes up).

Timeouts: each step of a request (waiting for a free connection, connecting, writing the
request, waiting for the response's status and headers) may take the request's whole timeout,
as httpx's per-phase timeouts do; one timer is moved from step to step, and when it fires the
error names the step. Reading the body is the caller's to bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from apflow_server.execution.rest.connection import (
    ConnectError,
    Connection,
    ConnectTimeout,
    OriginKey,
    PoolTimeout,
    ReadTimeout,
    Response,
    TransportError,
    WriteTimeout,
)

# Opens a connection to an origin (the private-address guard lives there).
Connect = Callable[[str, str, int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]

# Each step of a request: the error its timeout raises, and what was awaited.
_STEPS: dict[str, tuple[type[TransportError], str]] = {
    "pool": (PoolTimeout, "no connection came free"),
    "connect": (ConnectTimeout, "the connection was not made"),
    "write": (WriteTimeout, "the server took nothing"),
    "read": (ReadTimeout, "the server sent nothing"),
}


class ConnectionPool:
    def __init__(
        self,
        *,
        connect: Connect,
        max_connections: int,
        max_keepalive: int,
        keepalive_expiry: float,
    ) -> None:
        self._connect = connect
        self._slots = asyncio.Semaphore(max_connections)
        self._max_keepalive = max_keepalive
        self._keepalive_expiry = keepalive_expiry
        self._idle: dict[OriginKey, list[Connection]] = {}
        self._idle_count = 0
        self._closed = False

    async def request(
        self,
        origin: OriginKey,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes | None,
        timeout: float,  # noqa: ASYNC109 - each step's own limit, not the whole call's
    ) -> Response:
        """Send a request and wait for its response's head; the caller reads the body and
        closes the response, which frees the connection."""
        if self._closed:
            raise ConnectError("the HTTP client has been closed")
        loop = asyncio.get_running_loop()
        step = "pool"

        def begin(next_step: str) -> None:
            nonlocal step
            step = next_step
            limit.reschedule(loop.time() + timeout)

        try:
            async with asyncio.timeout(timeout) as limit:
                await self._slots.acquire()
                try:
                    connection = self._take_idle(origin, loop.time())
                    if connection is None:
                        begin("connect")
                        reader, writer = await self._connect(*origin)
                        connection = Connection(
                            reader, writer, origin=origin, keepalive_expiry=self._keepalive_expiry
                        )
                    try:
                        status, response_headers = await connection.send(
                            method, target, headers, body, begin
                        )
                    except BaseException:
                        connection.close()
                        raise
                except BaseException:
                    self._slots.release()
                    raise
        except TimeoutError:
            if not limit.expired():
                raise
            error, awaited = _STEPS[step]
            raise error(f"{awaited} within {timeout:g} s") from None
        return Response(status, response_headers, connection, self._release)

    def _take_idle(self, origin: OriginKey, now: float) -> Connection | None:
        stack = self._idle.get(origin)
        while stack:
            connection = stack.pop()
            self._idle_count -= 1
            if connection.usable(now):
                return connection
            connection.close()
        return None

    def _release(self, connection: Connection, ended: bool) -> None:
        """A response was closed: its connection is kept for the next request, or closed."""
        self._slots.release()
        if (
            ended
            and not self._closed
            and self._idle_count < self._max_keepalive
            and connection.reusable(asyncio.get_running_loop().time())
        ):
            self._idle.setdefault(connection.origin, []).append(connection)
            self._idle_count += 1
        else:
            connection.close()

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle, self._idle_count = self._idle, {}, 0
        for stack in idle.values():
            for connection in stack:
                connection.close()
