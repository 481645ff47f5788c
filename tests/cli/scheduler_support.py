"""Helpers for the scheduler CLI tests: reading the database directly, waiting for it, and
making sure no daemon outlives its test."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from apflow_server.cli.daemon import process_alive, runs_apflow
from apflow_server.storage import instances
from apflow_server.storage.database import Database
from apflow_server.storage.models import SchedulerInstance, Task, TaskRun

T = TypeVar("T")


async def _query(url: str, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    database = Database(url)
    try:
        async with database.transaction(write=True) as session:
            return await work(session)
    finally:
        await database.dispose()


def query(url: str, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    return asyncio.run(_query(url, work))


def task_row(url: str, task_id: str) -> Task:
    async def work(session: AsyncSession) -> Task:
        task = await session.get(Task, task_id)
        assert task is not None
        return task

    return query(url, work)


def set_task_status(url: str, task_id: str, status: str) -> None:
    """As a scheduler elsewhere would leave the task (e.g. in_progress while it runs)."""

    async def work(session: AsyncSession) -> None:
        task = await session.get(Task, task_id)
        assert task is not None
        task.status = status

    query(url, work)


def runs_of(url: str, task_id: str) -> list[TaskRun]:
    async def work(session: AsyncSession) -> list[TaskRun]:
        found = select(TaskRun).where(TaskRun.task_id == task_id).order_by(TaskRun.created_at)
        return list(await session.scalars(found))

    return query(url, work)


def instance_rows(url: str) -> list[SchedulerInstance]:
    async def work(session: AsyncSession) -> list[SchedulerInstance]:
        return list(await session.scalars(select(SchedulerInstance)))

    return query(url, work)


def forget_instances(url: str) -> None:
    async def work(session: AsyncSession) -> None:
        await session.execute(delete(SchedulerInstance))

    query(url, work)


def add_instance(url: str, *, heartbeat_at: datetime, **fields: Any) -> str:
    """A heartbeat row as a scheduler in another process would write it."""
    row: dict[str, Any] = {
        "id": f"elsewhere:{os.getpid()}:{fields.get('user_filter') or 'all'}",
        "host": "elsewhere",
        "pid": 4242,
        "mode": "internal",
        "user_filter": None,
        "state": "running",
        "started_at": heartbeat_at,
        "heartbeat_at": heartbeat_at,
        "stats": {"heartbeat_interval": 5},
    }
    row.update(fields)

    async def work() -> None:
        database = Database(url)
        try:
            await instances.beat(database, row)
        finally:
            await database.dispose()

    asyncio.run(work())
    return str(row["id"])


def wait_for(condition: Callable[[], T], timeout: float, what: str) -> T:
    """Poll `condition` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.1)


def kill_if_alive(pid: int) -> None:
    """Teardown: never leave a daemon behind, whatever the test did."""
    if process_alive(pid) and runs_apflow(pid):
        os.kill(pid, signal.SIGKILL)
