"""Execution: executors by name, and running task trees."""

from apflow_server.execution.errors import ExecutionError
from apflow_server.execution.registry import (
    ExecutionContext,
    ExecutorRegistry,
    register_executor,
    registry,
)
from apflow_server.execution.services import ExecutorServices

__all__ = [
    "ExecutionContext",
    "ExecutionError",
    "ExecutorRegistry",
    "ExecutorServices",
    "register_executor",
    "registry",
]
