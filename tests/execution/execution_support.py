"""Helpers of the execution tests: executors of their own and a harness that builds task trees,
runs them through an InternalScheduler and reads back tasks and run history."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from apflow_server import register_executor
from apflow_server.config import Settings
from apflow_server.core.types import RunTrigger
from apflow_server.execution import ExecutionContext
from apflow_server.scheduler import InternalScheduler
from apflow_server.scheduler.base import SchedulerConfig
from apflow_server.storage.database import Database
from apflow_server.storage.models import Task, TaskRun
from apflow_server.storage.repository import TaskRepository
from apflow_server.storage.runs import RunResult

# ---------------------------------------------------------------------- executors of these tests


@register_executor("exec_tests_context")
async def context_executor(inputs: dict[str, Any], context: ExecutionContext) -> dict[str, Any]:
    """Returns what the executor saw: its merged inputs and its context."""
    return {
        "inputs": inputs,
        "task_id": context.task_id,
        "task_name": context.task_name,
        "run_id": context.run_id,
        "user_id": context.user_id,
        "params": context.params,
        "attempt": context.attempt,
        "scheduled_for": context.scheduled_for,
        "child_results": context.child_results,
        "dependency_results": context.dependency_results,
    }


@register_executor("exec_tests_run_id")
def run_id_executor(inputs: dict[str, Any], context: ExecutionContext) -> dict[str, Any]:
    """A result that differs on every run: shows that inputs are merged afresh each run."""
    return {"run": context.run_id, "from_a": 1}


@register_executor("exec_tests_list")
def list_executor(inputs: dict[str, Any], context: ExecutionContext) -> list[int]:
    """A result that is not a JSON object."""
    return [1, 2, 3]


@register_executor("exec_tests_odd_result")
def odd_result_executor(inputs: dict[str, Any], context: ExecutionContext) -> dict[str, Any]:
    """A result that is not JSON as it stands."""
    return {"when": datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC), "nested": {"n": 1}}


@register_executor("exec_tests_broken")
def broken_executor(inputs: dict[str, Any], context: ExecutionContext) -> None:
    """Fails with an exception the engine does not expect."""
    raise KeyError("missing")


# ---------------------------------------------------------------------- the harness


class Harness:
    """Trees in, runs out: everything a test needs against one database."""

    def __init__(self, database: Database, settings: Settings) -> None:
        self.database = database
        self.settings = settings
        self.repo = TaskRepository(database, settings=settings)
        self.schedulers: list[InternalScheduler] = []

    def use_settings(self, **changes: Any) -> None:
        """Change the settings the harness's next schedulers run with (the executors read
        them from their run's context, not from the environment)."""
        self.settings = dataclasses.replace(self.settings, **changes)
        self.repo = TaskRepository(self.database, settings=self.settings)

    async def scheduler(self, **config: Any) -> InternalScheduler:
        config.setdefault("poll_interval", 60)
        config.setdefault("retry_backoff_seconds", 0.01)
        scheduler = InternalScheduler(
            SchedulerConfig(**config), database=self.database, settings=self.settings, claim=False
        )
        await scheduler.start()
        self.schedulers.append(scheduler)
        return scheduler

    async def tree(self, *specs: Mapping[str, Any]) -> dict[str, str]:
        """Create a tree (parents and dependencies by name); returns {name: id}."""
        created = await self.repo.create_tasks([dict(spec) for spec in specs])
        return {task.name: task.id for task in created}

    async def run(
        self, task_id: str, scheduler: InternalScheduler | None = None, **config: Any
    ) -> tuple[str, RunResult]:
        if scheduler is None:
            scheduler = await self.scheduler(**config)
        return await scheduler.run_and_wait(task_id, RunTrigger.MANUAL)

    async def task(self, task_id: str) -> Task:
        task = await self.repo.get_task_by_id(task_id)
        assert task is not None
        return task

    async def result(self, task_id: str) -> Any:
        return (await self.task(task_id)).result

    async def tasks(self, ids: Mapping[str, str]) -> dict[str, Task]:
        return {name: await self.task(task_id) for name, task_id in ids.items()}

    async def runs(self, task_id: str) -> list[TaskRun]:
        page = await self.repo.list_runs(task_id=task_id, limit=100)
        return list(page.items)

    async def close(self) -> None:
        for scheduler in self.schedulers:
            await scheduler.stop(grace=5)
