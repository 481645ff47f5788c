"""Only an admin writes tasks that run commands.

A task that uses command_executor runs programs on the service's host as the service's user,
so creating one, changing one in any way, or switching a task to the executor is an admin's
operation. With authentication off there is no principal: the caller is the local operator,
who is the admin. The CLI acts as the local operator and does not come through here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from apflow_server.core.commands import COMMAND_EXECUTOR, names_command_executor
from apflow_server.core.errors import ForbiddenError
from apflow_server.service.caller import Principal
from apflow_server.storage.models import Task


def refuse_command_tasks_unless_admin(
    principal: Principal | None, params: Mapping[str, Any], current: Task | None = None
) -> None:
    """Refuse a non-admin's `tasks.create` params (one task, or a tree under "tasks") or
    `tasks.update` params (`current` is the stored task) that write a command task."""
    if principal is None or principal.is_admin:
        return
    if current is not None:
        if names_command_executor(current.params, current.schemas) or _names(params):
            raise ForbiddenError(f"only an admin may change a task that uses {COMMAND_EXECUTOR}")
        return
    batch = params.get("tasks")
    if isinstance(batch, list):
        for index, spec in enumerate(batch):
            if isinstance(spec, Mapping) and _names(spec):
                raise ForbiddenError(
                    f"tasks[{index}]: only an admin may create a task that uses {COMMAND_EXECUTOR}"
                )
    if _names(params):
        raise ForbiddenError(f"only an admin may create a task that uses {COMMAND_EXECUTOR}")


def _names(spec: Mapping[str, Any]) -> bool:
    return names_command_executor(spec.get("params"), spec.get("schemas"))
