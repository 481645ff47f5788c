"""apflow-server: task trees on schedules, fired exactly once, visible in your calendar.

The two registration functions are imported on first use, so `import apflow_server` (and
every `apflow` command) does not load the executors, the web stack or the database layer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from apflow_server.core.version import __version__

__all__ = ["__version__", "register_executor", "register_webhook_verify_hook"]

if TYPE_CHECKING:
    from apflow_server.execution.registry import register_executor
    from apflow_server.webhooks.hooks import register_webhook_verify_hook


def __getattr__(name: str) -> Any:
    if name == "register_executor":
        from apflow_server.execution.registry import register_executor

        return register_executor
    if name == "register_webhook_verify_hook":
        from apflow_server.webhooks.hooks import register_webhook_verify_hook

        return register_webhook_verify_hook
    raise AttributeError(f"module 'apflow_server' has no attribute {name!r}")
