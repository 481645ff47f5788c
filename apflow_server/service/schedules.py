"""Schedules: list and find the due ones, recompute, report an external run, preview, and the
calendar export."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from apflow_server.core.compute import UNLIMITED, Budget, off_loop
from apflow_server.service.caller import Principal, user_scope
from apflow_server.service.tasks import Tasks
from apflow_server.storage.models import Task
from apflow_server.storage.repository import Page, TaskRepository


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
