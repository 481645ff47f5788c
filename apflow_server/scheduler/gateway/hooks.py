"""Kept for earlier import paths: see `apflow_server.webhooks.hooks`."""

from apflow_server.webhooks.hooks import (
    VerifyHook,
    current_hook,
    register_webhook_verify_hook,
    run_hook,
    unregister_webhook_verify_hook,
)

__all__ = [
    "VerifyHook",
    "current_hook",
    "register_webhook_verify_hook",
    "run_hook",
    "unregister_webhook_verify_hook",
]
