"""rest_executor's connection pool: httpcore's HTTP/1.1 connections, kept per origin.

httpcore's own pool re-examines every connection it holds whenever a request starts or a
response ends, and counts its idle connections once for each of them: with a hundred pooled
connections that bookkeeping took 40 % of a scheduler's CPU in a burst of HTTP calls. Here a
request costs the same however many connections are pooled: concurrent requests are bounded by
a semaphore, and idle connections wait per origin on a stack, the most recently used on top
(the likeliest to still be open; an expired one is closed when it comes up).

The connections themselves are httpcore's (`AsyncHTTPConnection`: connecting, TLS, HTTP/1.1),
opened through the guarded network backend of transport.py.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator

import httpcore

OriginKey = tuple[bytes, bytes, int]


class ConnectionPool:
    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext,
        max_connections: int,
        max_keepalive: int,
        keepalive_expiry: float,
        network_backend: httpcore.AsyncNetworkBackend,
    ) -> None:
        self._ssl_context = ssl_context
        self._slots = asyncio.Semaphore(max_connections)
        self._max_keepalive = max_keepalive
        self._keepalive_expiry = keepalive_expiry
        self._backend = network_backend
        self._idle: dict[OriginKey, list[httpcore.AsyncHTTPConnection]] = {}
        self._idle_count = 0
        self._closed = False

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        if self._closed:
            raise httpcore.ConnectError("the HTTP client has been closed")
        pool_timeout = request.extensions.get("timeout", {}).get("pool")
        try:
            async with asyncio.timeout(pool_timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise httpcore.PoolTimeout("no connection came free in time") from None
        origin = request.url.origin
        key = (origin.scheme, origin.host, origin.port)
        try:
            response, connection = await self._send(request, key)
        except BaseException:
            self._slots.release()
            raise
        return httpcore.Response(
            status=response.status,
            headers=response.headers,
            content=_ReturnedOnClose(response.stream, self, key, connection),
            extensions=response.extensions,
        )

    async def _send(
        self, request: httpcore.Request, key: OriginKey
    ) -> tuple[httpcore.Response, httpcore.AsyncHTTPConnection]:
        """Send on an idle connection to the origin, else on a new one; a pooled connection
        that turns out to be unusable is dropped and the next one tried."""
        while True:
            connection = await self._take_idle(key)
            fresh = connection is None
            if connection is None:
                connection = httpcore.AsyncHTTPConnection(
                    origin=request.url.origin,
                    ssl_context=self._ssl_context,
                    keepalive_expiry=self._keepalive_expiry,
                    http1=True,
                    http2=False,
                    network_backend=self._backend,
                )
            try:
                return await connection.handle_async_request(request), connection
            except httpcore.ConnectionNotAvailable:
                await connection.aclose()
                if fresh:
                    raise
            except BaseException:
                await connection.aclose()
                raise

    async def _take_idle(self, key: OriginKey) -> httpcore.AsyncHTTPConnection | None:
        stack = self._idle.get(key)
        while stack:
            connection = stack.pop()
            self._idle_count -= 1
            if connection.is_idle() and not connection.has_expired():
                return connection
            await connection.aclose()
        return None

    async def _returned(self, key: OriginKey, connection: httpcore.AsyncHTTPConnection) -> None:
        """A response was closed: its connection is kept for the next request, or closed."""
        self._slots.release()
        if not self._closed and connection.is_idle() and self._idle_count < self._max_keepalive:
            self._idle.setdefault(key, []).append(connection)
            self._idle_count += 1
        else:
            await connection.aclose()

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle, self._idle_count = self._idle, {}, 0
        for stack in idle.values():
            for connection in stack:
                await connection.aclose()


class _ReturnedOnClose:
    """A response's body; closing it hands the connection back to the pool."""

    def __init__(
        self,
        stream: object,
        pool: ConnectionPool,
        key: OriginKey,
        connection: httpcore.AsyncHTTPConnection,
    ) -> None:
        self._stream = stream
        self._pool = pool
        self._key = key
        self._connection = connection
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for part in self._stream:  # type: ignore[attr-defined]
            yield part

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            close = getattr(self._stream, "aclose", None)
            if close is not None:
                await close()
        finally:
            await self._pool._returned(self._key, self._connection)
