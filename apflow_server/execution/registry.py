"""Executors by name: registered in code, by decorator, or through the entry-point group
`apflow_server.executors`.

An executor is a callable `(inputs, context) -> result`, sync or async. Sync executors run in a
worker thread so they never block the event loop that renews leases and claims work.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, overload

from apflow_server.core.errors import ApflowError
from apflow_server.execution.builtins import BUILTINS
from apflow_server.execution.context import ExecutionContext, Executor

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "apflow_server.executors"


class UnknownExecutorError(ApflowError):
    code = -32602


class ExecutorRegistry:
    def __init__(self) -> None:
        self._executors: dict[str, Executor] = {}
        self._plugins_loaded = False

    def register(self, name: str, executor: Executor, *, replace: bool = False) -> Executor:
        if not name or not isinstance(name, str):
            raise ValueError("an executor needs a non-empty name")
        if name in self._executors and not replace and self._executors[name] is not executor:
            raise ValueError(f"an executor named {name!r} is already registered")
        self._executors[name] = executor
        return executor

    def names(self) -> list[str]:
        self._load_plugins()
        return sorted(self._executors)

    def get(self, name: str) -> Executor:
        self._load_plugins()
        try:
            return self._executors[name]
        except KeyError:
            known = ", ".join(sorted(self._executors)) or "none"
            raise UnknownExecutorError(
                f"no executor named {name!r} (registered: {known})",
                data={"field": "params.executor_id"},
            ) from None

    async def call(self, name: str, inputs: dict[str, Any], context: ExecutionContext) -> Any:
        executor = self.get(name)
        if inspect.iscoroutinefunction(executor) or inspect.iscoroutinefunction(
            getattr(executor, "__call__", None)  # noqa: B004 - objects with async __call__
        ):
            return await executor(inputs, context)
        result = await asyncio.to_thread(executor, inputs, context)
        if inspect.isawaitable(result):
            return await result
        return result

    def _load_plugins(self) -> None:
        """Built-ins first (unless the application registered its own under their names), then
        the entry points of installed packages. Once, on first use."""
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for builtin_name, builtin in BUILTINS.items():
            self._executors.setdefault(builtin_name, builtin)
        for point in entry_points(group=ENTRY_POINT_GROUP):
            try:
                self.register(point.name, point.load())
            except Exception:
                logger.exception("could not load executor entry point %s", point.value)


registry = ExecutorRegistry()


@overload
def register_executor(name: str, executor: Executor) -> Executor: ...
@overload
def register_executor(name: str) -> Callable[[Executor], Executor]: ...
@overload
def register_executor(name: Executor) -> Executor: ...


def register_executor(
    name: str | Executor, executor: Executor | None = None
) -> Executor | Callable[[Executor], Executor]:
    """Register an executor: `register_executor("x", fn)`, `@register_executor("x")`, or
    `@register_executor` (named after the function)."""
    if callable(name):
        return registry.register(getattr(name, "__name__", repr(name)), name)
    if executor is not None:
        return registry.register(name, executor)
    label = name

    def decorate(function: Executor) -> Executor:
        return registry.register(label, function)

    return decorate
