"""The HTTP client of rest_executor and of notification deliveries: the private-address guard
sits where the socket is opened.

Checking a name and then letting an HTTP client resolve it again is a race a DNS server can
win (the first answer public, the second 127.0.0.1). Here the name is resolved once, every
address of the answer is checked, and the connection is opened to a checked address
(`GuardedConnector`). TLS still verifies, and sends as SNI, the name from the URL, not the
address.

`GuardedClient` sends a request over a pool (pool.py) of HTTP/1.1 connections
(connection.py) opened by the connector. It sends what it is given and nothing else: no
cookies are kept, no redirect is followed, no proxy from the environment is used.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Mapping
from ipaddress import ip_address

import httpx

from apflow_server.execution.errors import ExecutionError
from apflow_server.execution.rest.addresses import IPAddress, non_public_reason
from apflow_server.execution.rest.connection import ConnectError, Response
from apflow_server.execution.rest.pool import ConnectionPool

ALLOW_SETTING = "APFLOW_REST_ALLOW_PRIVATE_URLS"


class NonPublicAddressError(ExecutionError):
    """The request would connect to an address that is not public."""

    def __init__(self, host: str, address: IPAddress) -> None:
        super().__init__(
            f"{host} resolves to the non-public address {address}; "
            f"set {ALLOW_SETTING}=1 to allow it"
        )
        self.host = host
        self.address = address


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to, in the resolver's order, without repeats."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ConnectError(f"cannot resolve {host!r}: {exc}") from None
    addresses: list[IPAddress] = []
    for family, _, _, _, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            address = ip_address(sockaddr[0])
            if address not in addresses:
                addresses.append(address)
    if not addresses:
        raise ConnectError(f"{host!r} has no IPv4 or IPv6 address")
    return addresses


class GuardedConnector:
    """Opens TCP (and TLS) connections only to addresses the guard allows (all, when
    `allow_private`)."""

    def __init__(self, *, allow_private: bool, ssl_context: ssl.SSLContext) -> None:
        self.allow_private = allow_private
        self.ssl_context = ssl_context
        ssl_context.set_alpn_protocols(["http/1.1"])  # the only protocol spoken here

    async def __call__(
        self, scheme: str, host: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        addresses = await resolve(host, port)
        if not self.allow_private:
            for address in addresses:
                if non_public_reason(address) is not None:
                    raise NonPublicAddressError(host, address)
        tls = self.ssl_context if scheme == "https" else None
        # One attempt per checked address, in order, within the caller's connect timeout.
        # Each is given the address itself, so nothing resolves the name again.
        failure = ConnectError(f"cannot connect to {host!r}")
        for address in addresses:
            try:
                return await asyncio.open_connection(
                    str(address), port, ssl=tls, server_hostname=host if tls else None
                )
            except ssl.SSLError as exc:  # the server answered: another address would too
                raise ConnectError(str(exc)) from None
            except OSError as exc:
                failure = ConnectError(str(exc) or type(exc).__name__)
        raise failure


class GuardedClient:
    """HTTP/1.1 with keep-alive over a pool whose connections pass the guard."""

    def __init__(
        self,
        *,
        allow_private: bool,
        ssl_context: ssl.SSLContext,
        max_connections: int,
        max_keepalive: int,
        keepalive_expiry: float,
    ) -> None:
        self._pool = ConnectionPool(
            connect=GuardedConnector(allow_private=allow_private, ssl_context=ssl_context),
            max_connections=max_connections,
            max_keepalive=max_keepalive,
            keepalive_expiry=keepalive_expiry,
        )

    async def request(
        self,
        method: str,
        url: httpx.URL,
        *,
        headers: Mapping[str, str],
        body: bytes | None,
        timeout: float,  # noqa: ASYNC109 - each step's own limit, not the whole call's
    ) -> Response:
        """Send the request; the response's body is read (`Response.read`) or the response
        closed by the caller. `headers` are sent as given, with Host and Content-Length added
        when they are missing."""
        scheme = url.scheme
        port = url.port if url.port is not None else (443 if scheme == "https" else 80)
        return await self._pool.request(
            (scheme, url.raw_host.decode("ascii"), port),
            method.encode("ascii"),
            url.raw_path,
            request_head(url, method, headers, body),
            body,
            timeout,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()


def request_head(
    url: httpx.URL, method: str, headers: Mapping[str, str], body: bytes | None
) -> list[tuple[bytes, bytes]]:
    given = {name.lower() for name in headers}
    head: list[tuple[bytes, bytes]] = []
    if "host" not in given:
        head.append((b"Host", url.netloc))
    head.extend(
        (name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()
    )
    framed = "content-length" in given or "transfer-encoding" in given
    if not framed and (body or method in ("POST", "PUT", "PATCH")):
        head.append((b"Content-Length", str(len(body or b"")).encode("ascii")))
    return head
