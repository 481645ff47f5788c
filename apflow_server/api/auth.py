"""Who is calling: JWT verification, the JWT middleware, and client addresses.

Tokens are HS256 (or HS384/HS512) with the algorithm pinned by configuration, never taken from
the token; every token must carry `exp` (and `aud`/`iss` when configured); `sub` is the user
and `roles` containing `admin` makes an admin. A token that is present but invalid is refused
outright: no other layer gets a chance to accept the request (no fall-through).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import jwt
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from apflow_server.config import Network, Settings
from apflow_server.core.errors import UnauthenticatedError
from apflow_server.core.task_fields import is_valid_unicode
from apflow_server.service.caller import Principal as Principal
from apflow_server.service.caller import check_owner as check_owner


def decode_token(token: str, settings: Settings) -> Principal:
    if not settings.jwt_secret:
        raise UnauthenticatedError("bearer tokens are not accepted: no JWT secret is configured")
    # `exp` is required: a token without one would stay valid forever (docs/decisions.md).
    # With an audience or issuer configured, pyjwt requires the claim and checks its value.
    required = ["sub", "exp"]
    if settings.jwt_audience:
        required.append("aud")
    if settings.jwt_issuer:
        required.append("iss")
    try:
        claims = jwt.decode(
            token,
            settings.jwt_secret,
            algorithms=[settings.jwt_algorithm],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            options={"require": required},
        )
    except jwt.ExpiredSignatureError:
        raise UnauthenticatedError("the token has expired") from None
    except jwt.InvalidTokenError as exc:
        raise UnauthenticatedError(f"invalid token: {exc}") from None
    subject = claims.get("sub")
    roles = claims.get("roles") or []
    # The subject becomes a user_id: held to the same rules (1-255 characters, no NUL, valid
    # Unicode), so a strange one is refused here rather than failing a query later.
    if (
        not isinstance(subject, str)
        or not subject.strip()
        or len(subject) > 255
        or "\x00" in subject
        or not is_valid_unicode(subject)
    ):
        raise UnauthenticatedError("invalid token: sub must be a user id of 1-255 characters")
    if isinstance(roles, str):
        roles = [roles]
    if not isinstance(roles, list):
        raise UnauthenticatedError("invalid token: roles must be a list")
    return Principal(subject=subject, is_admin="admin" in roles, source="jwt")


def bearer_token(connection: HTTPConnection) -> str | None:
    header = connection.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthenticatedError("the Authorization header must be 'Bearer <token>'")
    return token.strip()


class JWTMiddleware:
    """Verifies a bearer token on every request that carries one.

    The verified Principal (or None) is put in `scope["state"]["principal"]`; an invalid
    token's error goes to `scope["state"]["auth_error"]`, and `principal_of` raises it. The
    middleware does not answer by itself: the webhook route first counts the request against
    its rate limit and checks the IP allowlist, then asks for the principal (and gets the 401).
    Every endpoint that acts for a caller asks, so an invalid token never falls through to
    another layer.
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            state = scope.setdefault("state", {})
            state["principal"], state["auth_error"] = None, None
            try:
                token = bearer_token(HTTPConnection(scope))
                if token is not None:
                    state["principal"] = decode_token(token, self.settings)
            except UnauthenticatedError as error:
                state["auth_error"] = error
        await self.app(scope, receive, send)


def principal_of(connection: HTTPConnection) -> Principal | None:
    """The caller's verified identity (None: no token); raises the 401 of an invalid token."""
    state = connection.scope.get("state", {})
    error: UnauthenticatedError | None = state.get("auth_error")
    if error is not None:
        raise error
    principal: Principal | None = state.get("principal")
    return principal


def require_user(principal: Principal | None, settings: Settings) -> Principal | None:
    """With a JWT secret configured, a request must carry a valid token (JWT is on when a
    secret is configured); without one, anyone may call."""
    if principal is None and settings.jwt_secret:
        raise UnauthenticatedError("authentication required: send Authorization: Bearer <jwt>")
    return principal


def client_address(connection: HTTPConnection, trusted: Sequence[Network]) -> str:
    """The client's address: the peer, or from X-Forwarded-For when the peer is a trusted
    proxy (read right to left, skipping trusted proxies, so a client cannot forge it)."""
    peer = connection.client.host if connection.client else "unknown"
    if not trusted or not _in(peer, trusted):
        return peer
    forwarded = connection.headers.get("x-forwarded-for", "")
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _in(hop, trusted):
            return hop if _is_address(hop) else peer
    return hops[0] if hops and _is_address(hops[0]) else peer


def _is_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _in(address: str, networks: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def address_allowed(address: str, allowed: Sequence[Network]) -> bool:
    return not allowed or _in(address, allowed)
