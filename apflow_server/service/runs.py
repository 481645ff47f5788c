"""Runs: start one now (a webhook, tasks.execute, a scheduler through the API), cancel one,
list the history."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from apflow_server.core.clock import utcnow
from apflow_server.core.errors import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    ValidationError,
)
from apflow_server.core.task_fields import json_depth
from apflow_server.core.types import OverlapPolicy, RunStatus, RunTrigger
from apflow_server.scheduler.base import SchedulerState
from apflow_server.scheduler.internal import InternalScheduler
from apflow_server.service.audit import Audit, Change
from apflow_server.service.caller import Principal, check_owner, is_admin, user_scope
from apflow_server.service.tasks import Tasks, checked_task_id
from apflow_server.storage.instances import beat, live_instances
from apflow_server.storage.models import SchedulerInstance, Task, TaskRun
from apflow_server.storage.repository import Page, TaskRepository, subtree_of
from apflow_server.storage.runs import RunStore

MAX_IDEMPOTENCY_KEY = 255
MAX_STATS_BYTES = 16_384
# The instance id writes made outside any scheduler are recorded under (the CLI's).
OPERATOR_INSTANCE = "cli"


class Runs:
    def __init__(
        self,
        repository: TaskRepository,
        tasks: Tasks,
        scheduler: InternalScheduler | None,
        audit: Audit,
    ) -> None:
        self.repository = repository
        self.tasks = tasks
        self.scheduler = scheduler
        self.audit = audit

    async def trigger(
        self,
        caller: Principal | None,
        task_id: Any,
        *,
        wait: bool,
        trigger: RunTrigger,
        idempotency_key: str | None = None,
        scheduled_for: datetime | None = None,
        overlap: str | None = None,
    ) -> dict[str, Any]:
        """Start a run of the task here (or fire its due occurrence) and describe it; while
        it runs, `overlap` (else the task's policy) decides what happens.

        The caller's permission is checked under the task's row lock, in the transaction that
        starts the run (concurrent starts share that transaction)."""
        if idempotency_key is not None and (
            not idempotency_key or len(idempotency_key) > MAX_IDEMPOTENCY_KEY
        ):
            raise ValidationError("Idempotency-Key", "must be 1-255 characters")
        if overlap is not None and overlap not in {policy.value for policy in OverlapPolicy}:
            raise ValidationError("overlap", "must be an overlap policy")
        if scheduled_for is not None and not is_admin(caller):
            # Firing a named due occurrence is what an API-mode scheduler does.
            raise ForbiddenError("scheduled_for: only an admin (a scheduler) may fire occurrences")
        task_id = checked_task_id(task_id)
        if self.scheduler is None:
            raise RuntimeError("runs start in a scheduler: this service was made without one")
        claimed = await self.scheduler.start_run(
            task_id,
            trigger,
            idempotency_key=idempotency_key,
            scheduled_for=scheduled_for,
            check=lambda task: check_owner(caller, task.user_id),
            overlap=overlap,
        )
        if claimed is None:
            return {"success": False, "status": "not_due", "task_id": task_id, "run_id": None}
        if not claimed.replayed and scheduled_for is None:  # a scheduler's firing is no change
            action = f"task.run.{trigger.value}"
            await self.audit.record(caller, Change(action, "task", task_id, claimed.user_id))
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

    async def cancel(self, caller: Principal | None, task_id: Any) -> bool:
        """Cancel the task's running run, wherever it runs (its process stops it at its next
        lease renewal); False when none runs."""
        task = await self.tasks.get(caller, task_id)
        cancelled = await (await self._store()).cancel(task_id)
        if cancelled:
            await self.audit.record(caller, Change("task.cancel", "task", task.id, task.user_id))
        return cancelled

    async def request_trigger(
        self, caller: Principal | None, task_id: Any
    ) -> tuple[Task, list[SchedulerInstance]]:
        """Ask the running schedulers to start the task now (one claims the request as a
        manual run): the task and the live schedulers that would take it. Refused, with what
        to do instead, when none would."""
        task = await self.tasks.get(caller, task_id)
        live = await self._live()
        found = takers(live, task)
        if not found:
            raise ConflictError(nobody_takes(live, task))
        await (await self._store()).request_trigger(task.id)
        await self.audit.record(caller, Change("task.run.requested", "task", task.id, task.user_id))
        return task, found

    async def live_schedulers(self, caller: Principal | None) -> list[SchedulerInstance]:
        """Every scheduler instance alive now, on any host (they show hosts and users)."""
        if not is_admin(caller):
            raise ForbiddenError("only an admin may list the schedulers")
        return await self._live()

    async def record_heartbeat(
        self,
        caller: Principal | None,
        *,
        instance_id: str,
        host: str,
        pid: int,
        state: str,
        user_filter: str | None,
        started_at: datetime | None,
        stats: dict[str, Any],
        heartbeat_interval: int,
    ) -> None:
        """An API-mode scheduler's beat (it has no database of its own): its instance row,
        so `apflow scheduler status` and the dashboard see it. Schedulers act as admins."""
        if not is_admin(caller):
            raise ForbiddenError("only an admin (a scheduler) may record a heartbeat")
        if state not in {member.value for member in SchedulerState}:
            raise ValidationError("state", "must be a scheduler state")
        if json_depth(stats) > 4 or len(json.dumps(stats, default=str)) > MAX_STATS_BYTES:
            raise ValidationError("stats", f"must be a flat object under {MAX_STATS_BYTES} bytes")
        now = utcnow()
        await beat(
            await self.repository.db(),
            {
                "id": instance_id,
                "host": host,
                "pid": pid,
                "mode": "api",
                "user_filter": user_filter,
                "state": state,
                "started_at": started_at or now,
                "heartbeat_at": now,
                "stats": {**stats, "heartbeat_interval": heartbeat_interval},
            },
        )

    async def _live(self) -> list[SchedulerInstance]:
        return await live_instances(await self.repository.db(), utcnow())

    async def get_run(self, caller: Principal | None, run_id: str) -> TaskRun:
        """One run of the history, if the caller may see its task's runs."""
        run = await self._run(run_id)
        if run is None or (caller is not None and not caller.may_act_for(run.user_id)):
            raise NotFoundError(f"run {run_id!r} not found (its history may have been pruned)")
        return run

    async def _store(self) -> RunStore:
        if self.scheduler is not None and self.scheduler.store is not None:
            return self.scheduler.store
        database = await self.repository.db()
        return RunStore(database, self.repository.settings, OPERATOR_INSTANCE)

    async def list_runs(
        self,
        caller: Principal | None,
        *,
        task_id: Any = None,
        user_id: Any = None,
        status: str | None = None,
        trigger: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> Page:
        if task_id is not None:
            await self.tasks.get(caller, task_id)
        return await self.repository.list_runs(
            task_id=task_id,
            user_id=user_scope(caller, user_id),
            status=status,
            trigger=trigger,
            limit=limit,
            offset=offset,
        )

    async def _run(self, run_id: str) -> TaskRun | None:
        database = await self.repository.db()
        async with database.transaction() as session:
            return await session.get(TaskRun, run_id)

    async def _children(self, task_id: str) -> list[dict[str, Any]]:
        database = await self.repository.db()
        async with database.transaction() as session:
            rows = await subtree_of(session, task_id)
        return [
            {"task_id": row.id, "name": row.name, "status": row.status, "error": row.error}
            for row in rows
            if row.id != task_id
        ]


def takers(live: Sequence[SchedulerInstance], task: Task) -> list[SchedulerInstance]:
    """Of the live schedulers, the running (not paused) internal ones that would claim a
    trigger of `task`."""
    return [
        row
        for row in live
        if row.state == SchedulerState.RUNNING.value
        and row.mode == "internal"
        and (row.user_filter is None or row.user_filter == task.user_id)
    ]


def nobody_takes(live: Sequence[SchedulerInstance], task: Task) -> str:
    """Why no scheduler would take a trigger of `task`, and what to do instead."""
    fallback = f"or run it in this process with `apflow tasks execute {task.id}`"
    if not live:
        return (
            "no scheduler is running to take the trigger: start one with "
            f"`apflow scheduler start`, {fallback}"
        )
    return (
        f"no running scheduler takes task {task.id!r} (the {len(live)} live one(s) are paused "
        f"or only run other users' tasks), {fallback}"
    )
