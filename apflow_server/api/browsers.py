"""What a web page can make a browser send, and why it gets nowhere.

A page on any site can make its visitor's browser send requests to a service on the visitor's
machine or network. Three things stop it from driving this service:

- Hosts: a request must name one of `APFLOW_ALLOWED_HOSTS` in its Host header (by default the
  loopback names when bound to loopback). A page that rebinds its own DNS name to 127.0.0.1
  reaches the port, but its requests say `Host: evil.example`, and are refused (400).
  The health probes are exempt: a Kubernetes probe names the pod's IP, and they reveal nothing.
- Origins: a state-changing request (anything but GET, HEAD, OPTIONS) that a browser marks
  with an `Origin` header is refused (403) unless that origin is this service itself or is
  listed in `APFLOW_CORS_ORIGINS`. curl, cron and schedulers send no Origin.
- Content type: JSON-RPC accepts only `application/json` (see rpc.py), which a page cannot
  send to another origin without a CORS preflight, and CORS is off unless
  `APFLOW_CORS_ORIGINS` lists origins.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
PROBES = frozenset({"/healthz", "/readyz"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def host_patterns(hosts: Sequence[str]) -> list[str]:
    """Host names as the Host header spells them: IPv6 literals in brackets."""
    patterns = []
    for host in hosts:
        host = host.strip().lower()
        try:
            if ipaddress.ip_address(host).version == 6:
                host = f"[{host}]"
        except ValueError:
            pass
        patterns.append(host)
    return patterns


class HostCheck(TrustedHostMiddleware):
    """Starlette's TrustedHostMiddleware, with the health probes exempt."""

    def __init__(self, app: ASGIApp, allowed_hosts: Sequence[str]) -> None:
        super().__init__(app, allowed_hosts=host_patterns(allowed_hosts), www_redirect=False)
        self.inner = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in PROBES:
            await self.inner(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def public_origin(url: str) -> str:
    """The web origin of a URL: scheme://host[:port], as a browser's Origin header names it."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


class OriginCheck:
    """Refuses state-changing requests that a browser sent from another origin."""

    def __init__(self, app: ASGIApp, allowed_origins: Sequence[str]) -> None:
        self.app = app
        self.allowed = {origin.rstrip("/").lower() for origin in allowed_origins}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
            headers = Headers(scope=scope)
            origin = headers.get("origin")
            if origin is not None and not self._allowed(origin.lower(), scope, headers):
                response = JSONResponse(
                    {"error": f"requests from the web page at {origin} are not accepted"},
                    status_code=403,
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _allowed(self, origin: str, scope: Scope, headers: Headers) -> bool:
        if origin in self.allowed:
            return True
        own = f"{scope.get('scheme', 'http')}://{headers.get('host', '')}".lower()
        return origin == own
