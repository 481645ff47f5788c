"""JSON Web Tokens as this service issues them: HMAC-signed, always expiring. Pure."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import jwt


def issue_token(
    secret: str,
    subject: str,
    *,
    roles: Sequence[str] = (),
    expires_in: int = 3600,
    algorithm: str = "HS256",
    audience: str | None = None,
    issuer: str | None = None,
) -> str:
    """A token the server accepts: it always expires (`expires_in` seconds, at least 1), and
    carries `aud`/`iss` when the server is configured to require them."""
    if expires_in < 1:
        raise ValueError("a token must expire: expires_in must be at least 1 second")
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": subject,
        "roles": list(roles),
        "iat": now,
        "exp": now + expires_in,
    }
    if audience:
        claims["aud"] = audience
    if issuer:
        claims["iss"] = issuer
    return jwt.encode(claims, secret, algorithm=algorithm)
