"""Task trees: resolving references by id or name, and refusing cycles. Pure.

A tree has one root; children run before their parent; a task may depend on its siblings only
(a dependency on an ancestor or descendant could never be satisfied, since the parent runs
after its children).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from apflow_server.core.errors import ValidationError

# A tree is bounded in both directions: its run, its listing and its deletion walk it, and some
# of those walks are recursive (SQLite cascades a delete at most 1,000 levels deep).
MAX_TREE_DEPTH = 100
MAX_TREE_TASKS = 1000


@dataclass
class NodeRef:
    """A task as far as tree validation cares: identity, parent and dependencies."""

    id: str
    name: str
    parent_id: str | None
    dependencies: list[dict[str, Any]] = field(default_factory=list)


def _lookup(
    ref: str, by_id: Mapping[str, NodeRef], by_name: Mapping[str, list[NodeRef]]
) -> NodeRef | None:
    if ref in by_id:
        return by_id[ref]
    named = by_name.get(ref, [])
    if len(named) > 1:
        raise LookupError(ref)
    return named[0] if named else None


def batch_label(size: int) -> Any:
    """Error-field prefixes: `tasks[2].` in a batch, nothing for a single task."""
    return (lambda index: f"tasks[{index}].") if size > 1 else (lambda index: "")


def plan_batch(specs: Sequence[dict[str, Any]], existing_ids: Iterable[str]) -> list[NodeRef]:
    """Give every spec an id and resolve `parent_id` references made by id or by name.

    Exactly one spec may have a parent outside the batch (None, or an existing task): the root
    of the new subtree. Returns the nodes in the order given.
    """
    existing = set(existing_ids)
    label = batch_label(len(specs))
    nodes: list[NodeRef] = []
    by_id: dict[str, NodeRef] = {}
    by_name: dict[str, list[NodeRef]] = {}
    for index, spec in enumerate(specs):
        task_id = spec.get("id") or str(uuid.uuid4())
        if task_id in by_id:
            raise ValidationError(f"{label(index)}id", f"{task_id!r} is used twice")
        if task_id in existing:
            raise ValidationError(f"{label(index)}id", f"a task {task_id!r} already exists")
        node = NodeRef(task_id, spec["name"], spec.get("parent_id"), spec.get("dependencies", []))
        nodes.append(node)
        by_id[task_id] = node
        by_name.setdefault(node.name, []).append(node)

    roots = []
    for index, node in enumerate(nodes):
        if node.parent_id is None:
            roots.append(index)
            continue
        try:
            parent = _lookup(node.parent_id, by_id, by_name)
        except LookupError:
            raise ValidationError(
                f"{label(index)}parent_id", f"{node.parent_id!r} names several tasks; use an id"
            ) from None
        if parent is None:
            roots.append(index)  # an existing task (checked by the caller) or unknown
        else:
            node.parent_id = parent.id
    if len(roots) != 1:
        raise ValidationError(
            "tasks",
            f"a tree needs exactly one root (a task without a parent in it), found {len(roots)}",
        )
    _check_no_parent_cycle(nodes, label)
    return nodes


def _check_no_parent_cycle(nodes: Sequence[NodeRef], label: Any) -> None:
    parents = {node.id: node.parent_id for node in nodes}
    for index, node in enumerate(nodes):
        seen = {node.id}
        current = parents.get(node.id)
        while current is not None and current in parents:
            if current in seen:
                raise ValidationError(f"{label(index)}parent_id", "parents form a cycle")
            seen.add(current)
            current = parents[current]


def resolve_dependencies(nodes: Sequence[NodeRef], field_of: Any = None) -> None:
    """Rewrite each dependency reference (id or name) to the id of a sibling; refuse the rest.

    `nodes` must hold every member of each sibling group concerned (new and existing), and
    `field_of(node)` gives the field prefix for error messages.
    """
    prefix = field_of or (lambda node: "dependencies")
    groups: dict[str | None, list[NodeRef]] = {}
    for node in nodes:
        groups.setdefault(node.parent_id, []).append(node)
    for siblings in groups.values():
        by_id = {node.id: node for node in siblings}
        by_name: dict[str, list[NodeRef]] = {}
        for node in siblings:
            by_name.setdefault(node.name, []).append(node)
        for node in siblings:
            for index, dependency in enumerate(node.dependencies):
                where = f"{prefix(node)}[{index}].id"
                ref = dependency["id"]
                try:
                    target = _lookup(ref, by_id, by_name)
                except LookupError:
                    raise ValidationError(
                        where, f"{ref!r} names several siblings; use an id"
                    ) from None
                if target is None:
                    raise ValidationError(where, f"{ref!r} is not a sibling of {node.name!r}")
                if target.id == node.id:
                    raise ValidationError(where, "a task cannot depend on itself")
                dependency["id"] = target.id
        _check_acyclic(siblings, prefix)


def _check_acyclic(siblings: Sequence[NodeRef], prefix: Any) -> None:
    """Refuse a cycle among the siblings' dependencies (depth-first, with an explicit stack:
    a chain of a thousand dependencies must not exhaust Python's recursion limit)."""
    graph: dict[str, list[str]] = {
        node.id: [dep["id"] for dep in node.dependencies] for node in siblings
    }
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for start in siblings:
        if start.id in state:
            continue
        path = [start.id]
        stack = [iter(graph.get(start.id, []))]
        state[start.id] = 1
        while stack:
            target = next(stack[-1], None)
            if target is None:
                state[path.pop()] = 2
                stack.pop()
                continue
            if state.get(target) == 1:
                cycle = [*path[path.index(target) :], target]
                names = {node.id: node.name for node in siblings}
                shown = " -> ".join(names.get(item) or item for item in cycle)
                node = next(node for node in siblings if node.id == path[-1])
                raise ValidationError(prefix(node), f"dependencies form a cycle: {shown}")
            if target not in state:
                state[target] = 1
                path.append(target)
                stack.append(iter(graph.get(target, [])))


def depth_of_batch(nodes: Sequence[NodeRef]) -> int:
    """The number of levels of the subtree a planned batch forms (its root is level 1)."""
    parents = {node.id: node.parent_id for node in nodes}
    levels: dict[str, int] = {}
    for node in nodes:
        chain = []
        current: str | None = node.id
        while current in parents and current not in levels:
            chain.append(current)
            current = parents[current]
        level = levels.get(current, 0) if current is not None else 0
        for task_id in reversed(chain):
            level += 1
            levels[task_id] = level
    return max(levels.values(), default=0)
