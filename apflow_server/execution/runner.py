"""Executing one claimed run: reset the tree, run it, retry with backoff, bound it in time.

The runner never records the final outcome itself: its caller does, because only the caller
knows whether the run still belongs to this process (see storage/runs.py).
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import update

from apflow_server.core.clock import utcnow
from apflow_server.core.types import RunStatus, TaskStatus
from apflow_server.execution.registry import ExecutorRegistry
from apflow_server.execution.tree import TreeRun
from apflow_server.storage.database import Database
from apflow_server.storage.models import TASKS
from apflow_server.storage.runs import ClaimedRun, RunResult, RunStore, TaskState, tree_states

if TYPE_CHECKING:
    from apflow_server.execution.services import ExecutorServices

MAX_BACKOFF_SECONDS = 300.0


class DatabaseSink:
    """Records the state of a tree's descendants as they run."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def started(self, task_id: str) -> None:
        await self._write(task_id, status=TaskStatus.IN_PROGRESS.value, started_at=utcnow())

    async def finished(self, task_id: str, ok: bool, result: Any, error: str | None) -> None:
        await self._write(
            task_id,
            status=(TaskStatus.COMPLETED if ok else TaskStatus.FAILED).value,
            result=result,
            error=error,
            progress=1.0 if ok else 0.0,
            completed_at=utcnow(),
        )

    async def _write(self, task_id: str, **values: Any) -> None:
        async with self.database.transaction(write=True) as session:
            await session.execute(
                update(TASKS).where(TASKS.c.id == task_id).values(updated_at=utcnow(), **values)
            )


class RunExecutor:
    def __init__(
        self,
        store: RunStore,
        registry: ExecutorRegistry,
        *,
        task_timeout: float,
        retry_on_failure: bool = False,
        max_retries: int = 3,
        retry_backoff_seconds: float = 1.0,
        max_parallel: int = 8,
        services: ExecutorServices | None = None,
    ) -> None:
        self.store = store
        self.database = store.database
        self.registry = registry
        self.task_timeout = task_timeout
        self.retry_on_failure = retry_on_failure
        self.max_retries = max_retries
        self.retry_backoff_seconds = retry_backoff_seconds
        self.max_parallel = max_parallel
        # Handed to every run's executors (context.services); owned by the caller.
        self.services = services
        self.sink = DatabaseSink(store.database)

    def backoff(self, attempt: int) -> float:
        """Delay before attempt `attempt + 1`: the base, doubling, capped at five minutes."""
        return float(min(self.retry_backoff_seconds * 2 ** (attempt - 1), MAX_BACKOFF_SECONDS))

    async def execute(self, claimed: ClaimedRun) -> RunResult:
        """Run the tree until it succeeds, runs out of retries, or exceeds task_timeout."""
        attempt = claimed.attempt
        try:
            async with asyncio.timeout(self.task_timeout):
                while True:
                    ok, result, error = await self._attempt(claimed, attempt)
                    if ok:
                        return RunResult(RunStatus.COMPLETED, result, None, attempt)
                    if not self.retry_on_failure or attempt > self.max_retries:
                        return RunResult(RunStatus.FAILED, result, error, attempt)
                    await asyncio.sleep(self.backoff(attempt))
                    attempt += 1
                    await self.store.set_attempt(claimed.run_id, attempt)
        except TimeoutError:
            return RunResult(
                RunStatus.TIMEOUT,
                None,
                f"timed out after {self.task_timeout:g} s (attempt {attempt})",
                attempt,
            )

    async def _attempt(self, claimed: ClaimedRun, attempt: int) -> tuple[bool, Any, str | None]:
        # A task without children needs no reset and was read when it was claimed.
        tasks = [claimed.leaf] if claimed.leaf else await self._fresh_tree(claimed.task_id)
        if not tasks:
            return False, None, "the task was deleted"
        tree = TreeRun(
            tasks,
            claimed.task_id,
            run_id=claimed.run_id,
            attempt=attempt,
            scheduled_for=claimed.scheduled_for,
            registry=self.registry,
            sink=self.sink,
            max_parallel=self.max_parallel,
            services=self.services,
        )
        outcome = await tree.run()
        return outcome.ok, outcome.result, outcome.error

    async def _fresh_tree(self, root_id: str) -> list[TaskState]:
        """Load the tree and reset every descendant to a clean pending state."""
        now: datetime = utcnow()
        async with self.database.transaction() as session:
            rows = await tree_states(session, root_id)
        below = [row.id for row in rows if row.id != root_id]
        if below:
            async with self.database.transaction(write=True) as session:
                await session.execute(
                    update(TASKS)
                    .where(TASKS.c.id.in_(below))
                    .values(
                        status=TaskStatus.PENDING.value,
                        result=None,
                        error=None,
                        progress=0.0,
                        started_at=None,
                        completed_at=None,
                        updated_at=now,
                    )
                )
        return rows
