"""What `tasks execute` and `scheduler trigger` share: running a task in this process, and
reporting a finished run with the tree it ran (exit 1 unless it completed)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager

from apflow_server.core.errors import ApflowError
from apflow_server.core.types import RunStatus, RunTrigger, TaskStatus
from apflow_server.scheduler import InternalScheduler, SchedulerConfig
from apflow_server.service import Service
from apflow_server.service.audit import Change
from apflow_server.service.runs import OPERATOR_INSTANCE
from apflow_server.storage.models import Task, TaskRun
from apflow_server.storage.repository import TaskNode

from . import output
from .runtime import OPERATOR

# The instance id the CLI's own writes are recorded under (requests, cancellations).
CLI_INSTANCE = OPERATOR_INSTANCE


class RunFailed(ApflowError):
    """A run the command waited for ended other than completed."""


def report_run(run: TaskRun, node: TaskNode, output_format: str) -> None:
    """Show the outcome on stdout; a run that did not complete also ends the command with one
    `Error:` line and exit code 1."""
    output.show_run_outcome(run, node, output_format)
    if run.status != RunStatus.COMPLETED.value:
        reason = f": {run.error}" if run.error else ""
        raise RunFailed(f"run {run.id} of task {run.task_id} ended {run.status}{reason}")


@contextmanager
def quiet_logger(name: str, level: int = logging.ERROR) -> Iterator[None]:
    """Keep a library's warnings off a one-shot command's stderr (its outcome says it all)."""
    logger = logging.getLogger(name)
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)


async def execute_here(
    service: Service, task_id: str, task_timeout: float
) -> tuple[TaskRun, TaskNode]:
    """Run the task and its subtree now, in this process, as a manual run; its history row and
    the tree it ran."""
    task = await service.tasks.get(OPERATOR, task_id)
    # claim=False: this instance runs only what is started here, never due schedules.
    scheduler = InternalScheduler(
        SchedulerConfig(task_timeout=task_timeout, shutdown_grace_seconds=0),
        database=service.database,
        settings=service.settings,
        claim=False,
    )
    with quiet_logger("apflow_server.scheduler"):
        await scheduler.start()
        try:
            # trigger + wait_idle rather than run_and_wait: the run's outcome is read back from
            # its history row, so a run cancelled from elsewhere (`tasks cancel`) is reported
            # as such instead of ending without an outcome.
            run_id = await scheduler.trigger(task_id, RunTrigger.MANUAL)
            change = Change("task.run.manual", "task", task.id, task.user_id)
            await service.audit.record(OPERATOR, change)
            await _wait_showing_progress(service, task, scheduler.wait_idle())
        finally:
            await scheduler.stop()
    run = await service.runs.get_run(OPERATOR, run_id)
    return run, await service.tasks.subtree(OPERATOR, task_id)


# How often a terminal's progress line is refreshed from the database.
PROGRESS_SECONDS = 1.0


async def _wait_showing_progress(service: Service, task: Task, idle: Awaitable[None]) -> None:
    """Wait for the run; on a terminal, a status line on stderr meanwhile (elapsed time, the
    tree's tasks finished, the root's progress), so a long run does not look like a hang."""
    out = output.console(stderr=True)
    if not out.is_terminal:
        await idle
        return
    waiting = asyncio.ensure_future(idle)
    began = time.monotonic()
    with out.status(f"Running {output.describe(task)}", spinner="dots") as status:
        while not (await asyncio.wait({waiting}, timeout=PROGRESS_SECONDS))[0]:
            node = await service.tasks.subtree(OPERATOR, task.id)
            tasks = list(_walk(node))
            finished = sum(1 for each in tasks if each.status in FINISHED)
            percent = f", {node.task.progress:.0%}" if node.task.progress else ""
            status.update(
                f"Running {output.describe(task)}: {time.monotonic() - began:.0f} s, "
                f"{finished} of {len(tasks)} task{'s' if len(tasks) != 1 else ''} "
                f"finished{percent}"
            )
    await waiting


FINISHED = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})


def _walk(node: TaskNode) -> Iterator[Task]:
    yield node.task
    for child in node.children:
        yield from _walk(child)
