"""Who may knock on the webhook door at all: the per-address rate limit and the IP allowlist.

They run before any credential is looked at (a bearer token, the verify hook, the HMAC), and
every request counts towards the limit, refused ones included, so guessing credentials is
throttled. The REST route and the JSON-RPC method `tasks.webhook.trigger` both pass here.
"""

from __future__ import annotations

from typing import Protocol

from apflow_server.api.auth import address_allowed
from apflow_server.config import Settings
from apflow_server.core.errors import ApflowError, ForbiddenError, RateLimitedError


class RateLimit(Protocol):
    async def hit(self, address: str) -> int | None:
        """Count a request; None when allowed, else the seconds until the window frees."""


async def refusal(limit: RateLimit, settings: Settings, client_ip: str) -> ApflowError | None:
    """Why a webhook request from `client_ip` is refused before authentication, or None."""
    retry_after = await limit.hit(client_ip)
    if retry_after is not None:
        return RateLimitedError(
            "rate limit exceeded", data={"reason": "rate_limited", "retry_after": retry_after}
        )
    if not address_allowed(client_ip, settings.webhook_allowed_ips):
        return ForbiddenError(
            f"address {client_ip} is not allowed", data={"reason": "ip_not_allowed"}
        )
    return None
