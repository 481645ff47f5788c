"""What `tasks execute` and `scheduler trigger --wait` share: reporting a finished run with the
tree it ran (exit 1 unless it completed)."""

from __future__ import annotations

from apflow_server.core.errors import ApflowError
from apflow_server.core.types import RunStatus
from apflow_server.service.runs import OPERATOR_INSTANCE
from apflow_server.storage.models import TaskRun
from apflow_server.storage.repository import TaskNode

from . import output

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
