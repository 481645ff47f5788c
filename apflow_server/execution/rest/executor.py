"""rest_executor: one HTTP request per task, over a pooled client configured once.

How the built-in executors get the service's settings: executors are registered by name in a
process-wide registry, so the function registered as "rest_executor" cannot hold one
service's settings (two schedulers in one process may differ). Each scheduler (or app) makes
one `ExecutorServices` from its Settings, and every run's ExecutionContext carries it; the
function hands the request to that object's `RestExecutor`. Its settings are read once, its
TLS context is made once, and it keeps one pool of keep-alive connections per event loop (a
connection belongs to the loop it was opened on), closed when its owner stops.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import zlib
from typing import TYPE_CHECKING, Any

import httpx

from apflow_server.config import Settings
from apflow_server.core.version import __version__
from apflow_server.execution.errors import ExecutionError
from apflow_server.execution.rest.connection import BodyTooLarge, Response, TransportError
from apflow_server.execution.rest.inputs import RestRequest, parse_request
from apflow_server.execution.rest.transport import GuardedClient

if TYPE_CHECKING:
    from apflow_server.execution.context import ExecutionContext

# How long an idle pooled connection is kept before it is closed.
KEEPALIVE_SECONDS = 5.0
# What every request says of itself (a task's own headers override them, whatever their
# case). No Accept-Encoding: a compressed body could expand far past the size cap before it is
# counted.
DEFAULT_HEADERS = {"User-Agent": f"apflow-server/{__version__}", "Accept": "*/*"}
_CHARSET = re.compile(rb"charset=[\"']?([A-Za-z0-9_.:-]+)", re.IGNORECASE)


class RestExecutor:
    """The REST executor of one service: its guard, its caps and its pooled connections.

    No client state is shared between runs beyond the connections: no cookie jar (a cookie
    one task's server set would otherwise be sent with another user's request), no redirects,
    no authentication or proxy taken from the environment.
    """

    def __init__(self, settings: Settings, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.allow_private = settings.rest_allow_private_urls
        self.max_response_bytes = settings.rest_max_response_bytes
        self.max_connections = settings.rest_max_connections
        self.max_keepalive = settings.rest_max_keepalive
        self._ssl_context = ssl_context
        self._clients: dict[asyncio.AbstractEventLoop, GuardedClient] = {}

    def client(self) -> GuardedClient:
        """The pooled client of the running event loop, made on first use (its connections
        and locks belong to the loop they were made on)."""
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            for old in [other for other in self._clients if other.is_closed()]:
                del self._clients[old]  # their sockets went with their loop
            if self._ssl_context is None:  # made once: a TLS context costs tens of ms
                self._ssl_context = httpx.create_ssl_context()
            client = GuardedClient(
                allow_private=self.allow_private,
                ssl_context=self._ssl_context,
                max_connections=self.max_connections,
                max_keepalive=self.max_keepalive,
                keepalive_expiry=KEEPALIVE_SECONDS,
            )
            self._clients[loop] = client
        return client

    async def aclose(self) -> None:
        """Close the pooled clients (those of other loops on their own loop)."""
        loop = asyncio.get_running_loop()
        clients, self._clients = self._clients, {}
        for owner, client in clients.items():
            if owner is loop:
                await client.aclose()
            elif owner.is_running():
                asyncio.run_coroutine_threadsafe(client.aclose(), owner)

    async def __call__(self, inputs: dict[str, Any], context: ExecutionContext) -> dict[str, Any]:
        request = parse_request(inputs)
        headers = {
            **{name: value for name, value in DEFAULT_HEADERS.items() if not _has(request, name)},
            **request.headers,
        }
        body = None
        if request.json is not None:
            body = json.dumps(
                request.json, ensure_ascii=False, separators=(",", ":"), allow_nan=False
            ).encode("utf-8")
            if not _has(request, "Content-Type"):
                headers["Content-Type"] = "application/json"
        url = request.target
        if request.params is not None:
            url = url.copy_merge_params(request.params)
        try:
            # no redirects are followed: a public URL must not bounce the request inside
            response = await self.client().request(
                request.method, url, headers=headers, body=body, timeout=request.timeout
            )
        except TransportError as exc:
            raise ExecutionError(f"{request.label} failed: {type(exc).__name__}: {exc}") from None
        try:
            if not 200 <= response.status < 300:
                raise ExecutionError(f"{request.label} answered HTTP {response.status}")
            content = await self._read_body(response, request)
        except TransportError as exc:
            raise ExecutionError(f"{request.label} failed: {type(exc).__name__}: {exc}") from None
        finally:
            response.close()
        return {
            "status_code": response.status,
            "headers": _header_dict(response.headers),
            "body": _decoded(content, response),
        }

    async def _read_body(self, response: Response, request: RestRequest) -> bytes:
        """The body, read as it streams in: never more than the cap, never longer than the
        request's timeout after the response started."""
        cap = self.max_response_bytes
        too_big = ExecutionError(f"{request.label}: the response body exceeds {cap} bytes")
        declared = (response.header(b"content-length") or b"").decode("latin-1")
        # A HEAD answer declares the length of a body it does not send.
        if request.method != "HEAD" and declared.isdigit() and int(declared) > cap:
            raise too_big
        try:
            async with asyncio.timeout(request.timeout):
                body = await response.read(cap)
        except BodyTooLarge:
            raise too_big from None
        except TimeoutError:
            raise ExecutionError(
                f"{request.label} failed: the body took longer than {request.timeout:g} s"
            ) from None
        return _decompressed(body, response, cap, too_big, request)


def _has(request: RestRequest, name: str) -> bool:
    """Whether the task gives this header itself (names are case-insensitive)."""
    lowered = name.lower()
    return any(given.lower() == lowered for given in request.headers)


def _header_dict(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """The response's headers by lower-case name; repeated ones joined with ", "."""
    merged: dict[str, str] = {}
    for raw_name, raw_value in headers:
        name = raw_name.decode("latin-1")
        try:
            value = raw_value.decode("utf-8")
        except UnicodeDecodeError:
            value = raw_value.decode("latin-1")
        merged[name] = f"{merged[name]}, {value}" if name in merged else value
    return merged


def _decompressed(
    body: bytes, response: Response, cap: int, too_big: ExecutionError, request: RestRequest
) -> bytes:
    """A gzip or deflate body decompressed (no Accept-Encoding is sent, but some servers
    compress all the same), never to more than the cap; any other coding is kept as sent."""
    coding = (response.header(b"content-encoding") or b"").strip().lower()
    if coding in (b"gzip", b"x-gzip"):
        attempts: tuple[int, ...] = (16 + zlib.MAX_WBITS,)
    elif coding == b"deflate":  # zlib-wrapped as the RFC says, or raw as some servers send
        attempts = (zlib.MAX_WBITS, -zlib.MAX_WBITS)
    else:
        return body
    for wbits in attempts:
        try:
            decoder = zlib.decompressobj(wbits)
            plain = decoder.decompress(body, cap + 1)
        except zlib.error:
            continue
        if len(plain) > cap:
            raise too_big
        return plain
    raise ExecutionError(f"{request.label}: the {coding.decode()} body cannot be decompressed")


def _decoded(body: bytes, response: Response) -> Any:
    """JSON when the body is JSON, else its text (whole: the size cap already bounds it), in
    the charset its Content-Type names when Python can decode text in it, else UTF-8."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # not JSON, or nested too deep to parse
        pass
    match = _CHARSET.search(response.header(b"content-type") or b"")
    if match is not None:
        try:  # unknown names, and codecs that are not text encodings (rot13, hex, zlib)
            return body.decode(match.group(1).decode("ascii"), errors="replace")
        except (LookupError, UnicodeError):
            pass
    return body.decode("utf-8", errors="replace")


async def rest_executor(inputs: dict[str, Any], context: ExecutionContext) -> dict[str, Any]:
    """An HTTP request: url, method (GET), headers, params, json, timeout (30 s).

    Private and loopback addresses are refused unless APFLOW_REST_ALLOW_PRIVATE_URLS is set;
    redirects are not followed, so a public URL cannot bounce the request to a private one.
    The body is kept up to APFLOW_REST_MAX_RESPONSE_BYTES.
    """
    if context.services is None:
        raise ExecutionError(
            "rest_executor needs the settings of the service running it: "
            "its ExecutionContext has no services"
        )
    return await context.services.rest(inputs, context)
