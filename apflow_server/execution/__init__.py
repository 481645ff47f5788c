"""Execution: executors by name, and running task trees."""

from apflow_server.execution.context import ExecutionContext
from apflow_server.execution.errors import ExecutionError
from apflow_server.execution.registry import (
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
