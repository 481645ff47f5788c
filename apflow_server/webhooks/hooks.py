"""The pluggable webhook verify hook (the second layer of webhook authentication)."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable

from apflow_server.core.types import WebhookVerifyContext, WebhookVerifyResult

logger = logging.getLogger(__name__)

VerifyHook = Callable[[WebhookVerifyContext], WebhookVerifyResult | Awaitable[WebhookVerifyResult]]

_hook: VerifyHook | None = None


def register_webhook_verify_hook(hook: VerifyHook) -> VerifyHook:
    """Register the hook that verifies webhook triggers (usable as a decorator).

    One hook decides; registering another replaces it.
    """
    global _hook
    if _hook is not None and _hook is not hook:
        logger.warning("replacing the webhook verify hook %r with %r", _hook, hook)
    _hook = hook
    return hook


def unregister_webhook_verify_hook() -> None:
    global _hook
    _hook = None


def current_hook() -> VerifyHook | None:
    return _hook


async def run_hook(hook: VerifyHook, context: WebhookVerifyContext) -> WebhookVerifyResult:
    """The hook's verdict; a hook that fails or answers nonsense refuses the request."""
    try:
        verdict = hook(context)
        if inspect.isawaitable(verdict):
            verdict = await verdict
    except Exception:
        logger.exception("the webhook verify hook raised")
        return WebhookVerifyResult(valid=False, error="verification failed")
    if not isinstance(verdict, WebhookVerifyResult):
        logger.error("the webhook verify hook returned %r, not a WebhookVerifyResult", verdict)
        return WebhookVerifyResult(valid=False, error="verification failed")
    return verdict
