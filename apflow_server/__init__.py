"""apflow-server: task trees on schedules, fired exactly once, visible in your calendar."""

from apflow_server.execution.registry import register_executor

__version__ = "0.1.0"

__all__ = ["__version__", "register_executor"]
