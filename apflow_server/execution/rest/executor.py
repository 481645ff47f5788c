"""rest_executor: one HTTP request per task, over a pooled client configured once.

How the built-in executors get the service's settings: executors are registered by name in a
process-wide registry, so the function registered as "rest_executor" cannot hold one
service's settings (two schedulers in one process may differ). Each scheduler (or app) makes
one `ExecutorServices` from its Settings, and every run's ExecutionContext carries it; the
function hands the request to that object's `RestExecutor`. Its settings are read once, its
TLS context is made once, and it keeps one keep-alive HTTP client per event loop (an httpx
client belongs to the loop it was first used on), closed when its owner stops.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from typing import TYPE_CHECKING, Any

import httpx

from apflow_server.config import Settings
from apflow_server.core.version import __version__
from apflow_server.execution.errors import ExecutionError
from apflow_server.execution.rest.inputs import RestRequest, parse_request
from apflow_server.execution.rest.transport import GuardedTransport

if TYPE_CHECKING:
    from apflow_server.execution.context import ExecutionContext

# How long an idle pooled connection is kept before it is closed.
KEEPALIVE_SECONDS = 5.0
# What every request says of itself (a task's own headers override them). No
# Accept-Encoding: a compressed body could expand far past the size cap before it is counted.
DEFAULT_HEADERS = {"User-Agent": f"apflow-server/{__version__}", "Accept": "*/*"}
TIMEOUT_PHASES = ("connect", "read", "write", "pool")


class RestExecutor:
    """The REST executor of one service: its guard, its caps and its pooled transports.

    Requests go straight to the guarded transport, not through an `httpx.AsyncClient`: a
    client shared by every run would keep a cookie jar shared by every task, so a cookie one
    task's server set would be sent with another user's request (and the client's cookie,
    redirect and auth machinery was a tenth of the CPU of a burst of calls).
    """

    def __init__(self, settings: Settings, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.allow_private = settings.rest_allow_private_urls
        self.max_response_bytes = settings.rest_max_response_bytes
        self.limits = httpx.Limits(
            max_connections=settings.rest_max_connections,
            max_keepalive_connections=settings.rest_max_keepalive,
            keepalive_expiry=KEEPALIVE_SECONDS,
        )
        self._ssl_context = ssl_context
        self._transports: dict[asyncio.AbstractEventLoop, GuardedTransport] = {}

    def transport(self) -> GuardedTransport:
        """The pooled transport of the running event loop, made on first use (its connections
        and locks belong to the loop they were made on)."""
        loop = asyncio.get_running_loop()
        transport = self._transports.get(loop)
        if transport is None:
            for old in [other for other in self._transports if other.is_closed()]:
                del self._transports[old]  # their sockets went with their loop
            if self._ssl_context is None:  # made once: a TLS context costs tens of ms
                self._ssl_context = httpx.create_ssl_context()
            transport = GuardedTransport(
                allow_private=self.allow_private,
                limits=self.limits,
                ssl_context=self._ssl_context,
            )
            self._transports[loop] = transport
        return transport

    async def aclose(self) -> None:
        """Close the pooled transports (those of other loops on their own loop)."""
        loop = asyncio.get_running_loop()
        transports, self._transports = self._transports, {}
        for owner, transport in transports.items():
            if owner is loop:
                await transport.aclose()
            elif owner.is_running():
                asyncio.run_coroutine_threadsafe(transport.aclose(), owner)

    async def __call__(self, inputs: dict[str, Any], context: ExecutionContext) -> dict[str, Any]:
        request = parse_request(inputs)
        outgoing = httpx.Request(
            request.method,
            request.target,
            headers={**DEFAULT_HEADERS, **request.headers},
            params=request.params,
            json=request.json,
            # no redirects are followed: a public URL must not bounce the request inside
            extensions={"timeout": dict.fromkeys(TIMEOUT_PHASES, request.timeout)},
        )
        try:
            response = await self.transport().handle_async_request(outgoing)
        except httpx.HTTPError as exc:
            raise ExecutionError(f"{request.label} failed: {type(exc).__name__}: {exc}") from None
        response.request = outgoing
        try:
            if not response.is_success:
                raise ExecutionError(f"{request.label} answered HTTP {response.status_code}")
            body = await self._read_body(response, request)
        except httpx.HTTPError as exc:
            raise ExecutionError(f"{request.label} failed: {type(exc).__name__}: {exc}") from None
        finally:
            await response.aclose()
        return {
            "status_code": response.status_code,
            "headers": dict(response.headers),
            "body": _decoded(body, response),
        }

    async def _read_body(self, response: httpx.Response, request: RestRequest) -> bytes:
        """The body, read as it streams in: never more than the cap, never longer than the
        request's timeout after the response started."""
        cap = self.max_response_bytes
        too_big = ExecutionError(f"{request.label}: the response body exceeds {cap} bytes")
        declared = response.headers.get("Content-Length", "")
        # A HEAD answer declares the length of a body it does not send.
        if request.method != "HEAD" and declared.isdigit() and int(declared) > cap:
            raise too_big
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(request.timeout):
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > cap:
                        raise too_big
                    chunks.append(chunk)
        except TimeoutError:
            raise ExecutionError(
                f"{request.label} failed: the body took longer than {request.timeout:g} s"
            ) from None
        return b"".join(chunks)


def _decoded(body: bytes, response: httpx.Response) -> Any:
    """JSON when the body is JSON, else its text (whole: the size cap already bounds it)."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # not JSON, or nested too deep to parse
        return body.decode(response.encoding or "utf-8", errors="replace")


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
