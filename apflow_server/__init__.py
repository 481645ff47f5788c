"""apflow-server: task trees on schedules, fired exactly once, visible in your calendar."""

from apflow_server.execution.registry import register_executor
from apflow_server.scheduler.gateway.hooks import register_webhook_verify_hook

__version__ = "0.1.0"

__all__ = ["__version__", "register_executor", "register_webhook_verify_hook"]
