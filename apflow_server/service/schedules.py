"""Schedules: list and find the due ones, recompute, report an external run, preview, and the
calendar export."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from apflow_server.core.compute import UNLIMITED, Budget, off_loop
from apflow_server.core.errors import ValidationError
from apflow_server.core.task_fields import parse_instant
from apflow_server.schedules.plan import localise
from apflow_server.schedules.policy import holds_ahead
from apflow_server.service.caller import Principal, check_owner, user_scope
from apflow_server.service.tasks import Tasks
from apflow_server.storage.models import Task
from apflow_server.storage.repository import Page, TaskRepository

MAX_NOTE = 1000
MAX_SKIP = 1000


def _who(caller: Principal | None) -> str:
    if caller is None:
        return "the operator"
    return caller.subject or f"a {caller.source} caller"


def _note(field: str, note: Any) -> str | None:
    if note is None:
        return None
    if not isinstance(note, str) or len(note) > MAX_NOTE:
        raise ValidationError(field, f"must be a string of at most {MAX_NOTE} characters")
    return note.strip() or None


def _require_enabled(task: Task, action: str) -> None:
    if task.schedule_type is None:
        raise ValidationError("task_id", f"task {task.id!r} has no schedule to {action}")
    if not task.schedule_enabled:
        raise ValidationError(
            "task_id", f"the schedule of task {task.id!r} is disabled; nothing to {action}"
        )


logger = logging.getLogger("apflow_server.schedules")


class Schedules:
    def __init__(self, repository: TaskRepository, tasks: Tasks) -> None:
        self.repository = repository
        self.tasks = tasks

    async def list_scheduled(
        self,
        caller: Principal | None,
        *,
        enabled_only: bool = True,
        user_id: Any = None,
        schedule_type: str | None = None,
        status: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> Page:
        return await self.repository.list_scheduled(
            enabled_only=enabled_only,
            user_id=user_scope(caller, user_id),
            schedule_type=schedule_type,
            status=status,
            limit=limit,
            offset=offset,
        )

    async def due(
        self,
        caller: Principal | None,
        *,
        before: datetime | str | None = None,
        user_id: Any = None,
        limit: int = 100,
    ) -> list[Task]:
        return await self.repository.due_tasks(
            before=before, user_id=user_scope(caller, user_id), limit=limit
        )

    async def pause(
        self, caller: Principal | None, task_id: Any, *, note: Any = None, until: Any = None
    ) -> Task:
        """Pause the schedule: its grid goes on, and each occurrence that falls due while
        paused is recorded skipped ("paused"). With `until`, it resumes by itself then."""
        current = await self.tasks.get(caller, task_id)
        text = _note("note", note)
        # Without an offset, a wall-clock time in the task's zone (as schedule bounds are).
        end = localise(parse_instant("until", until), current.schedule_timezone)
        if end is not None and end <= self.repository.clock():
            raise ValidationError("until", "must be in the future")
        who = _who(caller)

        def pause(task: Task) -> dict[str, Any]:
            check_owner(caller, task.user_id)
            _require_enabled(task, "pause")
            return {
                "schedule_paused": True,
                "schedule_pause_note": text or f"paused by {who}",
                "schedule_paused_until": end,
            }

        task = await self.repository.set_hold(task_id, pause)
        logger.info(
            "task %s paused by %s until %s: %s",
            task.id,
            who,
            end or "resumed",
            task.schedule_pause_note,
        )
        return task

    async def resume(self, caller: Principal | None, task_id: Any, *, note: Any = None) -> Task:
        """Resume a paused schedule (its next occurrence runs; failures count from zero)."""
        await self.tasks.get(caller, task_id)
        text = _note("note", note)

        def resume(task: Task) -> dict[str, Any]:
            check_owner(caller, task.user_id)
            if task.schedule_type is None:
                raise ValidationError("task_id", f"task {task.id!r} has no schedule to resume")
            return {
                "schedule_paused": False,
                "schedule_pause_note": None,
                "schedule_paused_until": None,
                "consecutive_failures": 0,
            }

        task = await self.repository.set_hold(task_id, resume)
        logger.info("task %s resumed by %s%s", task.id, _who(caller), f": {text}" if text else "")
        return task

    async def skip(self, caller: Principal | None, task_id: Any, *, count: Any = 1) -> Task:
        """Skip the next `count` occurrences: each is recorded skipped ("skipped by <who>")
        when it falls due. Skips add up; a paused schedule keeps them for after the pause."""
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_SKIP:
            raise ValidationError("count", f"must be a whole number in 1..{MAX_SKIP}")
        await self.tasks.get(caller, task_id)
        who = _who(caller)

        def skip(task: Task) -> dict[str, Any]:
            check_owner(caller, task.user_id)
            _require_enabled(task, "skip")
            return {
                "schedule_skip_count": min(task.schedule_skip_count + count, MAX_SKIP),
                "schedule_skip_by": who,
            }

        return await self.repository.set_hold(task_id, skip)

    async def init(
        self, caller: Principal | None, task_id: Any, *, from_time: datetime | str | None = None
    ) -> Task:
        await self.tasks.get(caller, task_id)
        return await self.repository.init_schedule(task_id, from_time=from_time)

    async def complete(
        self,
        caller: Principal | None,
        task_id: Any,
        *,
        success: bool = True,
        error: str | None = None,
        result: Any = None,
        calculate_next_run: bool = True,
    ) -> Task:
        await self.tasks.get(caller, task_id)
        return await self.repository.complete_scheduled(
            task_id,
            success=success,
            error=error,
            result=result,
            calculate_next_run=calculate_next_run,
        )

    async def preview(
        self,
        caller: Principal | None,
        *,
        task_id: Any = None,
        count: int = 10,
        after: datetime | str | None = None,
        budget: Budget = UNLIMITED,
        **schedule_fields: Any,
    ) -> list[datetime]:
        if task_id is not None:
            await self.tasks.get(caller, task_id)
        return await self.repository.preview_schedule(
            task_id=task_id, count=count, after=after, budget=budget, **schedule_fields
        )

    async def preview_holds(
        self, caller: Principal | None, task_id: Any, fires: list[datetime]
    ) -> list[str | None]:
        """Why each of a task's upcoming fire times will be skipped (paused, skipped by
        <user>), or None where it runs."""
        return holds_ahead(await self.tasks.get(caller, task_id), fires)

    async def export_ical(
        self,
        caller: Principal | None,
        *,
        calendar_name: str | None = None,
        enabled_only: bool = True,
        user_id: Any = None,
        limit: int = 1000,
        base_url: str | None = None,
    ) -> tuple[str, int]:
        """The calendar text and how many tasks it shows."""
        from apflow_server.exports.ical import DEFAULT_CALENDAR_NAME, ICalExporter

        exporter = ICalExporter(
            calendar_name or DEFAULT_CALENDAR_NAME,
            base_url=base_url,
            repository=self.repository,
        )
        tasks = await exporter.fetch_tasks(
            user_id=user_scope(caller, user_id), enabled_only=enabled_only, limit=limit
        )
        return await off_loop(exporter.render, tasks), len(tasks)
