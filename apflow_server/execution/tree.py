"""Running one task tree: children before parents, siblings by priority and dependencies.

Pure orchestration over an in-memory snapshot of the tree; every state change is reported to a
`TaskStateSink`, which the runner backs with the database.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from apflow_server.config import DEFAULT_MAX_RESULT_BYTES
from apflow_server.core.commands import COMMAND_EXECUTOR, pin_control_inputs
from apflow_server.core.errors import ApflowError
from apflow_server.core.task_fields import MAX_JSON_DEPTH, json_depth
from apflow_server.execution.context import ExecutionContext
from apflow_server.execution.errors import ExecutionError
from apflow_server.execution.registry import ExecutorRegistry

if TYPE_CHECKING:
    from apflow_server.execution.services import ExecutorServices

logger = logging.getLogger(__name__)

AGGREGATE = "aggregate_results_executor"


class TaskSpec(Protocol):
    id: str
    parent_id: str | None
    name: str
    priority: int
    inputs: dict[str, Any]
    params: dict[str, Any]
    schemas: dict[str, Any]
    dependencies: list[Any]
    user_id: str | None


class TaskStateSink(Protocol):
    async def started(self, task_id: str) -> None: ...

    async def finished(self, task_id: str, ok: bool, result: Any, error: str | None) -> None: ...


@dataclass
class NodeOutcome:
    ok: bool
    result: Any = None
    error: str | None = None


@dataclass
class _Node:
    spec: TaskSpec
    children: list[_Node] = field(default_factory=list)
    outcome: NodeOutcome | None = None


def executor_name(spec: TaskSpec, has_children: bool) -> str | None:
    name = spec.params.get("executor_id") or spec.schemas.get("method")
    if isinstance(name, str) and name:
        return name
    return AGGREGATE if has_children else None


def stored_result(value: Any, max_bytes: int) -> Any:
    """An executor's result as it will be stored: JSON (anything else is converted), at most
    `max_bytes` of it and MAX_JSON_DEPTH levels deep, else the task fails saying why. Bounded
    because results flow into dependents (an aggregate of aggregates doubles at every step)."""
    if json_depth(value) > MAX_JSON_DEPTH:
        raise ExecutionError(f"the result nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        text = json.dumps(value, default=str, allow_nan=False)
    except (TypeError, ValueError):
        return str(value)
    if len(text) > max_bytes:
        raise ExecutionError(
            f"the result is {len(text)} bytes of JSON, over the {max_bytes} allowed"
        )
    return json.loads(text)


def merge_inputs(inputs: dict[str, Any], dependency_results: dict[str, Any]) -> dict[str, Any]:
    """Stored inputs, then each dependency's result (JSON objects are merged in, in the declared
    order, so fresh outputs override stored defaults). Built per run and never written back."""
    merged = dict(inputs)
    for result in dependency_results.values():
        if isinstance(result, dict):
            merged.update(result)
    return merged


class TreeRun:
    """One execution of the tree rooted at `root_id`."""

    def __init__(
        self,
        tasks: Sequence[TaskSpec],
        root_id: str,
        *,
        run_id: str,
        attempt: int,
        scheduled_for: datetime | None = None,
        registry: ExecutorRegistry,
        sink: TaskStateSink,
        max_parallel: int = 8,
        services: ExecutorServices | None = None,
    ) -> None:
        nodes = {spec.id: _Node(spec) for spec in tasks}
        for node in nodes.values():
            parent = nodes.get(node.spec.parent_id or "")
            if parent is not None and node.spec.id != root_id:
                parent.children.append(node)
        self.nodes = nodes
        self.root = nodes[root_id]
        self.run_id = run_id
        self.attempt = attempt
        self.scheduled_for = scheduled_for
        self.registry = registry
        self.sink = sink
        self.slots = asyncio.Semaphore(max_parallel)
        self.services = services
        self.max_result_bytes = (
            services.settings.max_result_bytes if services else DEFAULT_MAX_RESULT_BYTES
        )

    async def run(self) -> NodeOutcome:
        if not self.root.children:  # a single task: no group to orchestrate
            await self._run_node(self.root, {self.root.spec.id: self.root})
            assert self.root.outcome is not None
            return self.root.outcome
        return await self._run_group([self.root], is_root=True)

    async def _run_group(self, group: list[_Node], *, is_root: bool = False) -> NodeOutcome:
        """Run siblings: each when its dependencies have finished, lower priority first."""
        by_id = {node.spec.id: node for node in group}
        pending = sorted(group, key=lambda n: (n.spec.priority, n.spec.id))
        running: dict[asyncio.Task[None], _Node] = {}
        try:
            while pending or running:
                for node in list(pending):
                    deps = [by_id[d["id"]] for d in node.spec.dependencies if d["id"] in by_id]
                    if all(dep.outcome is not None for dep in deps):
                        pending.remove(node)
                        running[asyncio.create_task(self._run_node(node, by_id))] = node
                if not running:  # validation makes this unreachable; never hang on bad data
                    for node in pending:
                        node.outcome = NodeOutcome(False, error="dependencies can never finish")
                        await self.sink.finished(node.spec.id, False, None, node.outcome.error)
                    break
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for finished in done:
                    running.pop(finished)
                    finished.result()  # re-raise cancellation or a bug in the orchestration
        finally:
            for leftover in running:
                leftover.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)
        if is_root:
            assert self.root.outcome is not None
            return self.root.outcome
        return NodeOutcome(all(node.outcome and node.outcome.ok for node in group))

    async def _run_node(self, node: _Node, siblings: dict[str, _Node]) -> None:
        is_root = node is self.root
        failure = self._failed_dependency(node, siblings)
        if failure is not None:
            # Blocked: neither the task nor anything below it runs.
            await self._finish_subtree(node, NodeOutcome(False, error=failure), is_root)
            return
        if node.children:
            if not is_root:  # in progress while its children run
                await self.sink.started(node.spec.id)
            await self._run_group(node.children)
        failure = self._failed_child(node)
        if failure is not None:
            node.outcome = NodeOutcome(False, error=failure)
        else:
            # A leaf is marked started once it holds a slot, so slots go in priority order.
            mark_started = not is_root and not node.children
            node.outcome = await self._execute(node, siblings, mark_started)
        if not is_root:  # the root's outcome is recorded with the run itself
            await self._report(node)

    async def _report(self, node: _Node) -> None:
        assert node.outcome is not None
        outcome = node.outcome
        await self.sink.finished(node.spec.id, outcome.ok, outcome.result, outcome.error)

    async def _finish_subtree(self, node: _Node, outcome: NodeOutcome, is_root: bool) -> None:
        node.outcome = outcome
        if not is_root:
            await self._report(node)
        reason = f"not run: {node.spec.name!r} ({node.spec.id}) was blocked"
        for child in node.children:
            await self._finish_subtree(child, NodeOutcome(False, error=reason), False)

    @staticmethod
    def _failed_child(node: _Node) -> str | None:
        for child in node.children:
            if child.outcome is not None and not child.outcome.ok:
                return f"child {child.spec.name!r} ({child.spec.id}) failed: {child.outcome.error}"
        return None

    def _failed_dependency(self, node: _Node, siblings: dict[str, _Node]) -> str | None:
        for dependency in node.spec.dependencies:
            other = siblings.get(dependency["id"])
            if other is None or other.outcome is None or other.outcome.ok:
                continue
            if dependency.get("required", True):
                return (
                    f"required dependency {other.spec.name!r} ({other.spec.id}) failed: "
                    f"{other.outcome.error}"
                )
        return None

    async def _execute(
        self, node: _Node, siblings: dict[str, _Node], mark_started: bool
    ) -> NodeOutcome:
        spec = node.spec
        name = executor_name(spec, bool(node.children))
        if name is None:
            return NodeOutcome(False, error="no executor: set params.executor_id")
        dependency_results = {
            d["id"]: siblings[d["id"]].outcome.result  # type: ignore[union-attr]
            for d in spec.dependencies
            if d["id"] in siblings and siblings[d["id"]].outcome is not None
        }
        context = ExecutionContext(
            task_id=spec.id,
            task_name=spec.name,
            run_id=self.run_id,
            user_id=spec.user_id,
            params=dict(spec.params),
            attempt=self.attempt,
            scheduled_for=self.scheduled_for,
            child_results={
                c.spec.id: c.outcome.result for c in node.children if c.outcome is not None
            },
            dependency_results=dependency_results,
            services=self.services,
        )
        async with self.slots:
            if mark_started:
                await self.sink.started(spec.id)
            try:
                inputs = merge_inputs(spec.inputs, dependency_results)
                if name == COMMAND_EXECUTOR:
                    inputs = pin_control_inputs(spec.inputs, inputs)
                result = await self.registry.call(name, inputs, context)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # an executor's failure is the task's failure
                message = str(exc).strip() or type(exc).__name__
                if not _is_expected(exc):
                    logger.warning("task %s failed", spec.id, exc_info=True)
                    message = f"{type(exc).__name__}: {message}"
                return NodeOutcome(False, error=message)
        try:
            stored = stored_result(result, self.max_result_bytes)
        except ExecutionError as refused:
            return NodeOutcome(False, error=str(refused))
        return NodeOutcome(True, result=stored)


def _is_expected(exc: Exception) -> bool:
    return isinstance(exc, ExecutionError | ApflowError)
