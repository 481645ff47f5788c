"""What `tasks execute` and `scheduler trigger --wait` share: loading a finished run with the
tree it ran, and reporting it (exit 1 unless it completed)."""

from __future__ import annotations

from apflow_server.core.errors import ApflowError, NotFoundError, TaskNotFoundError
from apflow_server.core.types import RunStatus
from apflow_server.service.runs import OPERATOR_INSTANCE
from apflow_server.storage.database import Database
from apflow_server.storage.models import TaskRun
from apflow_server.storage.repository import TaskNode, TaskRepository

from . import output

# The instance id the CLI's own writes are recorded under (requests, cancellations).
CLI_INSTANCE = OPERATOR_INSTANCE


class RunFailed(ApflowError):
    """A run the command waited for ended other than completed."""


async def load_run(database: Database, run_id: str) -> TaskRun:
    async with database.transaction() as session:
        run = await session.get(TaskRun, run_id)
    if run is None:
        raise NotFoundError(f"run {run_id!r} not found (its history was pruned)")
    return run


def _find(node: TaskNode, task_id: str) -> TaskNode | None:
    if node.task.id == task_id:
        return node
    for child in node.children:
        found = _find(child, task_id)
        if found is not None:
            return found
    return None


async def task_subtree(repository: TaskRepository, task_id: str) -> TaskNode:
    """The task with its descendants (what one of its runs runs)."""
    root = await repository.get_tree(task_id)
    found = _find(root, task_id)
    if found is None:  # the tree changed under us
        raise TaskNotFoundError(task_id)
    return found


def report_run(run: TaskRun, node: TaskNode, output_format: str) -> None:
    """Show the outcome on stdout; a run that did not complete also ends the command with one
    `Error:` line and exit code 1."""
    output.show_run_outcome(run, node, output_format)
    if run.status != RunStatus.COMPLETED.value:
        reason = f": {run.error}" if run.error else ""
        raise RunFailed(f"run {run.id} of task {run.task_id} ended {run.status}{reason}")
