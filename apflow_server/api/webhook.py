"""POST /webhook/trigger/{task_id}: the REST gateway for external schedulers.

Every request is counted by the per-address rate limit first (refused ones too, so guessing
credentials is throttled; see admission.py), then the IP allowlist applies, then
authentication in this order,
each layer final once it answers: (1) a bearer JWT, (2) the registered verify hook, (3) the
HMAC signature when APFLOW_WEBHOOK_SECRET is set. With authentication on and no layer
accepting, the request is refused.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from slowapi import Limiter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from apflow_server.api import admission
from apflow_server.api.auth import Principal, client_address, principal_of
from apflow_server.api.rpc import read_body
from apflow_server.api.services import Services
from apflow_server.config import ConfigError, Settings
from apflow_server.core.errors import (
    ApflowError,
    ConflictError,
    RateLimitedError,
    UnauthenticatedError,
    ValidationError,
)
from apflow_server.core.types import RunTrigger, WebhookVerifyContext
from apflow_server.storage import replays
from apflow_server.webhooks import hooks, signatures

logger = logging.getLogger(__name__)


class WebhookRateLimit:
    """Requests per minute per client address, on slowapi's limiter and storage
    (memory by default, APFLOW_RATE_LIMIT_STORAGE such as a Redis URL to share it).

    A shared storage is a network call: it runs in a worker thread with short socket
    timeouts, so a slow Redis cannot hold the event loop, and when the storage cannot answer
    the request is let through (with a warning at most once a minute): the limit throttles
    guessing, it must not take the webhook down with it.
    """

    TIMEOUT_SECONDS = 0.5

    def __init__(self, settings: Settings) -> None:
        from limits import RateLimitItemPerMinute
        from limits.errors import ConfigurationError

        self.item = RateLimitItemPerMinute(max(settings.webhook_rate_limit, 1))
        self.enabled = settings.webhook_rate_limit > 0
        self.remote = not settings.rate_limit_storage.startswith("memory://")
        options: dict[str, Any] = {}
        if self.remote:
            options = {
                "socket_timeout": self.TIMEOUT_SECONDS,
                "socket_connect_timeout": self.TIMEOUT_SECONDS,
            }
        try:
            self.limiter = Limiter(
                key_func=lambda request: "",
                storage_uri=settings.rate_limit_storage,
                storage_options=options,
            ).limiter
        except ConfigurationError as exc:  # an unknown scheme, a missing client library
            reason = str(exc).strip().splitlines()[0]
            raise ConfigError(f"APFLOW_RATE_LIMIT_STORAGE: {reason}") from None
        self._warned_at = 0.0

    async def hit(self, address: str) -> int | None:
        """Count a request; None when allowed, else the seconds until the window frees."""
        if not self.enabled:
            return None
        if not self.remote:
            return self._hit(address)
        try:
            return await asyncio.to_thread(self._hit, address)
        except Exception as exc:
            if time.monotonic() - self._warned_at > 60:
                self._warned_at = time.monotonic()
                logger.warning(
                    "the rate-limit storage cannot be reached (%s); webhook requests are "
                    "not limited until it answers again",
                    type(exc).__name__,
                )
            return None

    def _hit(self, address: str) -> int | None:
        if self.limiter.hit(self.item, "webhook", address):
            return None
        reset_at, _remaining = self.limiter.get_window_stats(self.item, "webhook", address)
        return max(1, int(reset_at - time.time()) + 1)


def _refusal(services: Services, status: int, reason: str, message: str) -> JSONResponse:
    services.metrics.webhook_refusals.labels(reason=reason).inc()
    return JSONResponse({"success": False, "error": message}, status_code=status)


async def authenticate(
    request: Request, services: Services, task_id: str, body: bytes, client_ip: str
) -> Principal | None:
    settings = services.settings
    try:
        principal = principal_of(request)
    except UnauthenticatedError as error:  # an invalid token: final, no other layer may accept
        raise UnauthenticatedError(error.message, data={"reason": "bad_token"}) from None
    if principal is not None:
        return principal
    headers = request.headers
    hook = hooks.current_hook()
    if hook is not None:
        verdict = await hooks.run_hook(
            hook,
            WebhookVerifyContext(
                task_id=task_id,
                signature=headers.get(signatures.SIGNATURE_HEADER),
                timestamp=headers.get(signatures.TIMESTAMP_HEADER),
                client_ip=client_ip,
                headers=dict(headers),
                body=body,
            ),
        )
        if verdict.valid is not True:  # exactly True: a truthy "no" or 1 is not a yes
            raise UnauthenticatedError(
                verdict.error
                if isinstance(verdict.error, str) and verdict.error
                else "refused by the webhook verify hook"
            )
        return Principal(subject=verdict.user_id, is_admin=False, source="hook")
    if settings.webhook_secret:
        now = time.time()
        signature = headers.get(signatures.SIGNATURE_HEADER)
        try:
            signatures.verify(
                settings.webhook_secret,
                timestamp=headers.get(signatures.TIMESTAMP_HEADER),
                signature=signature,
                task_id=task_id,
                body=body,
                now=now,
                tolerance_seconds=settings.webhook_tolerance_seconds,
            )
        except signatures.SignatureError as error:
            raise UnauthenticatedError(str(error), data={"reason": error.reason}) from None
        assert signature is not None
        moment = datetime.fromtimestamp(now, UTC)
        keep_until = moment + timedelta(seconds=2 * settings.webhook_tolerance_seconds)
        if not await replays.first_use(services.database, signature, task_id, keep_until, moment):
            raise UnauthenticatedError("this signature was already used", data={"reason": "replay"})
        return Principal(subject=None, is_admin=False, source="hmac")
    if settings.auth_enabled:
        raise UnauthenticatedError("authentication required")
    return None


def _wait_requested(request: Request) -> bool:
    value = request.query_params.get("async", "true").strip().lower()
    if value not in {"true", "false", "1", "0"}:
        raise ValidationError("async", "must be true or false")
    return value in {"false", "0"}


async def webhook_trigger(request: Request) -> Response:
    services: Services = request.app.state.services
    settings = services.settings
    task_id = request.path_params["task_id"]
    client_ip = client_address(request, settings.trusted_proxies)
    refused = await admission.refusal(request.app.state.webhook_rate_limit, settings, client_ip)
    if isinstance(refused, RateLimitedError):
        response = _refusal(services, 429, "rate_limited", refused.message)
        response.headers["Retry-After"] = str(refused.data["retry_after"])
        return response
    if refused is not None:
        return _refusal(services, 403, "ip_not_allowed", refused.message)
    body = await read_body(request, settings.max_body_bytes)
    if body is None:
        return _refusal(services, 413, "too_large", "request body too large")
    try:
        wait = _wait_requested(request)
        principal = await authenticate(request, services, task_id, body, client_ip)
        outcome: dict[str, Any] = await services.service.runs.trigger(
            principal,
            task_id,
            wait=wait,
            trigger=RunTrigger.WEBHOOK,
            idempotency_key=request.headers.get("idempotency-key"),
        )
    except ApflowError as error:
        if error.http_status >= 500:
            raise
        if isinstance(error, ConflictError):  # busy: an answer, not a refusal to count
            return JSONResponse({"success": False, "error": error.message}, status_code=409)
        reason = (error.data or {}).get("reason") if isinstance(error.data, dict) else None
        return _refusal(services, error.http_status, reason or error.kind, error.message)
    return JSONResponse(outcome, status_code=200 if wait else 202)
