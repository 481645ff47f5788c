"""Tasks and trees: create, read, change, delete, list."""

from __future__ import annotations

from typing import Any

from apflow_server.core.errors import (
    ForbiddenError,
    NotFoundError,
    TaskNotFoundError,
    ValidationError,
)
from apflow_server.execution.registry import ExecutorRegistry, registry
from apflow_server.service.audit import Audit, Change
from apflow_server.service.caller import Principal, check_owner, is_admin, user_scope
from apflow_server.service.command_tasks import refuse_command_tasks_unless_admin
from apflow_server.storage.models import Task
from apflow_server.storage.repository import Page, TaskNode, TaskRepository


def checked_task_id(task_id: Any) -> str:
    """A task id fit for a query (a NUL reaches no task, and PostgreSQL refuses it)."""
    if not isinstance(task_id, str) or not task_id:
        raise ValidationError("task_id", "must be a task id")
    if "\x00" in task_id:
        raise TaskNotFoundError(task_id)
    return task_id


class Tasks:
    def __init__(
        self, repository: TaskRepository, audit: Audit, executors: ExecutorRegistry = registry
    ) -> None:
        self.repository = repository
        self.audit = audit
        self.executors = executors

    def check_executors(self, spec: dict[str, Any], prefix: str = "") -> None:
        """Refuse an executor that no built-in or loaded plugin provides: the task would fail
        at every run. APFLOW_ALLOW_UNKNOWN_EXECUTORS lets an API tier that does not load the
        workers' plugins accept them."""
        if self.repository.settings.allow_unknown_executors:
            return
        # The executor a run uses: params.executor_id, else schemas.method (the guide's form).
        for holder, key in (("params", "executor_id"), ("schemas", "method")):
            named = spec.get(holder)
            name = named.get(key) if isinstance(named, dict) else None
            if not isinstance(name, str) or not name:
                continue
            if name not in self.executors.names():
                known = ", ".join(self.executors.names())
                raise ValidationError(
                    f"{prefix}{holder}.{key}",
                    f"no executor named {name!r} is loaded (known: {known}; plugins load "
                    "through APFLOW_PLUGINS or the apflow_server.plugins entry points)",
                )
            return

    async def get(self, caller: Principal | None, task_id: Any) -> Task:
        """The task, if it exists and the caller may touch it."""
        task = await self.repository.require_task(checked_task_id(task_id))
        check_owner(caller, task.user_id)
        return task

    async def create(
        self, caller: Principal | None, specs: list[dict[str, Any]], *, batch: bool
    ) -> list[Task]:
        """One task (`batch` False) or a tree. A user creates for themselves; an admin for
        anyone. A tree may hang only under a task the caller owns."""
        if not specs or not all(isinstance(spec, dict) for spec in specs):
            raise ValidationError("tasks", "must be a non-empty list of task objects")
        refuse_command_tasks_unless_admin(caller, {"tasks": specs} if batch else specs[0])
        for index, spec in enumerate(specs):
            self.check_executors(spec, f"tasks[{index}]." if batch else "")
        if caller is not None and not caller.is_admin:
            for index, spec in enumerate(specs):
                owner = spec.get("user_id")
                if owner is not None and owner != caller.subject:
                    where = f"tasks[{index}].user_id" if batch else "user_id"
                    raise ForbiddenError(
                        f"{where}: only an admin may create tasks for another user"
                    )
            specs = [
                {**spec, "user_id": caller.subject} if spec.get("parent_id") is None else spec
                for spec in specs
            ]
        parent_id = specs[0].get("parent_id") if not batch else None
        if isinstance(parent_id, str):  # one task: 404 or 403 for its parent, as for any id
            try:
                await self.get(caller, parent_id)
            except NotFoundError:
                raise NotFoundError(
                    f"parent_id: no task {parent_id!r}", data={"field": "parent_id"}
                ) from None

        def check_parent(parent: Task) -> None:
            # In every form (one task, an array, {"tasks": [...]}): checked before the tree's
            # dependencies are resolved against the parent's children, so a refusal reveals
            # none of their ids.
            check_owner(caller, parent.user_id, "parent task")

        created = await self.repository.create_tasks(specs, check_parent=check_parent)
        await self.audit.record_many(
            caller,
            (
                Change("task.create", "task", task.id, task.user_id, tuple(spec))
                for task, spec in zip(created, specs, strict=True)
            ),
        )
        return created

    async def update(self, caller: Principal | None, task_id: Any, fields: dict[str, Any]) -> Task:
        current = await self.get(caller, task_id)
        if "user_id" in fields and not is_admin(caller):
            raise ForbiddenError("user_id: only an admin may change a task's owner")
        if not fields:
            raise ValidationError("params", "name at least one field to change")
        if "params" in fields or "schemas" in fields:
            # What the task will name: a new params.executor_id decides over a stored
            # schemas.method, and the other way round.
            self.check_executors(
                {
                    "params": fields.get("params", current.params),
                    "schemas": fields.get("schemas", current.schemas),
                }
            )

        def check_task(stored: Task) -> None:
            # Again inside the writing transaction: the stored task decides (an admin may have
            # made it a command task since it was read above).
            check_owner(caller, stored.user_id)
            refuse_command_tasks_unless_admin(caller, fields, stored)

        updated = await self.repository.update_task(task_id, check_task=check_task, **fields)
        await self.audit.record(
            caller, Change("task.update", "task", updated.id, updated.user_id, tuple(fields))
        )
        return updated

    async def delete(self, caller: Principal | None, task_id: Any) -> list[str]:
        """The ids deleted: the task and its descendants."""
        task = await self.get(caller, task_id)
        deleted = await self.repository.delete_task(task_id)
        await self.audit.record(caller, Change("task.delete", "task", task.id, task.user_id))
        return deleted

    async def list_tasks(
        self,
        caller: Principal | None,
        *,
        user_id: Any = None,
        status: str | None = None,
        parent_id: str | None = None,
        roots_only: bool = False,
        limit: int = 50,
        offset: int = 0,
    ) -> Page:
        return await self.repository.list_tasks(
            user_id=user_scope(caller, user_id),
            status=status,
            parent_id=parent_id,
            roots_only=roots_only,
            limit=limit,
            offset=offset,
        )

    async def tree(self, caller: Principal | None, task_id: Any) -> TaskNode:
        await self.get(caller, task_id)
        return await self.repository.get_tree(task_id)

    async def subtree(self, caller: Principal | None, task_id: Any) -> TaskNode:
        """The task with its descendants (what one of its runs runs)."""
        root = await self.tree(caller, task_id)
        found = _find(root, task_id)
        if found is None:  # the tree changed between the two reads
            raise TaskNotFoundError(task_id)
        return found


def _find(root: TaskNode, task_id: str) -> TaskNode | None:
    pending = [root]
    while pending:
        node = pending.pop()
        if node.task.id == task_id:
            return node
        pending.extend(node.children)
    return None
