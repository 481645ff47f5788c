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
from apflow_server.execution.errors import ExecutionError
from apflow_server.execution.rest.inputs import RestRequest, parse_request
from apflow_server.execution.rest.transport import GuardedTransport

if TYPE_CHECKING:
    from apflow_server.execution.registry import ExecutionContext

# How long an idle pooled connection is kept before it is closed.
KEEPALIVE_SECONDS = 5.0


class RestExecutor:
    """The REST executor of one service: its guard, its caps and its pooled clients."""

    def __init__(self, settings: Settings, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.allow_private = settings.rest_allow_private_urls
        self.max_response_bytes = settings.rest_max_response_bytes
        self.limits = httpx.Limits(
            max_connections=settings.rest_max_connections,
            max_keepalive_connections=settings.rest_max_keepalive,
            keepalive_expiry=KEEPALIVE_SECONDS,
        )
        self._ssl_context = ssl_context
        self._clients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}

    def client(self) -> httpx.AsyncClient:
        """The pooled client of the running event loop, made on first use."""
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None or client.is_closed:
            for old in [other for other in self._clients if other.is_closed()]:
                del self._clients[old]  # their sockets went with their loop
            if self._ssl_context is None:  # made once: a TLS context costs tens of ms
                self._ssl_context = httpx.create_ssl_context()
            client = httpx.AsyncClient(
                transport=GuardedTransport(
                    allow_private=self.allow_private,
                    limits=self.limits,
                    ssl_context=self._ssl_context,
                ),
                follow_redirects=False,  # a public URL must not bounce the request inside
                trust_env=False,  # no proxy from the environment: it would connect unchecked
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
        client = self.client()
        try:
            async with client.stream(
                request.method,
                request.url,
                headers=request.headers,
                params=request.params,
                json=request.json,
                timeout=request.timeout,
            ) as response:
                if not response.is_success:
                    raise ExecutionError(f"{request.label} answered HTTP {response.status_code}")
                body = await self._read_body(response, request)
        except httpx.HTTPError as exc:
            raise ExecutionError(f"{request.label} failed: {type(exc).__name__}: {exc}") from None
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
