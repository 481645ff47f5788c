"""What the HTTP layer works with: the settings, the database, the repository and the
scheduler that executes runs started here, plus the one trigger operation that the REST webhook,
`tasks.webhook.trigger` and `tasks.execute` share."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from apflow_server.api.auth import Principal, check_owner
from apflow_server.api.metrics import Metrics
from apflow_server.config import Settings
from apflow_server.core.errors import NotFoundError, ValidationError
from apflow_server.core.types import RunStatus, RunTrigger
from apflow_server.scheduler.internal import InternalScheduler
from apflow_server.storage.database import Database
from apflow_server.storage.models import Task, TaskRun
from apflow_server.storage.repository import TaskRepository, subtree_of

MAX_IDEMPOTENCY_KEY = 255


def checked_task_id(task_id: Any) -> str:
    """A task id fit for a query (a NUL reaches no task, and PostgreSQL refuses it)."""
    if not isinstance(task_id, str) or not task_id:
        raise ValidationError("task_id", "must be a task id")
    if "\x00" in task_id:
        raise NotFoundError(f"task {task_id!r} not found", data={"task_id": task_id})
    return task_id


@dataclass
class Services:
    settings: Settings
    database: Database
    repository: TaskRepository
    scheduler: InternalScheduler
    metrics: Metrics

    async def task_for(self, task_id: Any, principal: Principal | None) -> Task:
        """The task, if it exists and the caller may touch it."""
        task = await self.repository.require_task(checked_task_id(task_id))
        check_owner(principal, task.user_id)
        return task

    async def trigger(
        self,
        task_id: str,
        principal: Principal | None,
        *,
        wait: bool,
        trigger: RunTrigger,
        idempotency_key: str | None = None,
        scheduled_for: datetime | None = None,
    ) -> dict[str, Any]:
        """Start a run of the task here (or fire its due occurrence) and describe it."""
        if idempotency_key is not None and (
            not idempotency_key or len(idempotency_key) > MAX_IDEMPOTENCY_KEY
        ):
            raise ValidationError("Idempotency-Key", "must be 1-255 characters")
        claimed = await self.scheduler.start_run(
            checked_task_id(task_id),
            trigger,
            idempotency_key=idempotency_key,
            scheduled_for=scheduled_for,
            # Under the task's row lock, in the transaction that starts the run.
            check=lambda task: check_owner(principal, task.user_id),
        )
        if claimed is None:
            return {"success": False, "status": "not_due", "task_id": task_id, "run_id": None}
        if not wait:
            status = "duplicate" if claimed.replayed else "triggered"
            return {"success": True, "status": status, "task_id": task_id, "run_id": claimed.run_id}
        outcome = await self.scheduler.wait_for(claimed.run_id)
        run = await self._run(claimed.run_id)
        status = outcome.status.value if outcome else (run.status if run else "unknown")
        return {
            "success": status == RunStatus.COMPLETED.value,
            "status": status,
            "task_id": task_id,
            "run_id": claimed.run_id,
            "result": outcome.result if outcome else (run.result if run else None),
            "error": outcome.error if outcome else (run.error if run else None),
            "children": await self._children(task_id),
        }

    async def _run(self, run_id: str) -> TaskRun | None:
        async with self.database.transaction() as session:
            return await session.get(TaskRun, run_id)

    async def _children(self, task_id: str) -> list[dict[str, Any]]:
        async with self.database.transaction() as session:
            rows = await subtree_of(session, task_id)
        return [
            {"task_id": row.id, "name": row.name, "status": row.status, "error": row.error}
            for row in rows
            if row.id != task_id
        ]
