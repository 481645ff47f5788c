"""What an executor is, and what it is told about the task it runs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from apflow_server.execution.services import ExecutorServices

# The message of a cancellation that asks a run to end rather than stopping it at once
# (cancel_other): an executor with something to wind down (a child process) may take a short
# while to do it. Any other cancellation means stop now.
GRACEFUL_CANCEL = "apflow: end this run"


@dataclass(frozen=True)
class ExecutionContext:
    """What an executor knows about the task it runs."""

    task_id: str
    task_name: str
    run_id: str
    user_id: str | None
    params: dict[str, Any]
    attempt: int
    # The occurrence this run serves (None for manual, webhook and API runs).
    scheduled_for: datetime | None = None
    # Results of this task's children and dependencies, keyed by task id.
    child_results: dict[str, Any] = field(default_factory=dict)
    dependency_results: dict[str, Any] = field(default_factory=dict)
    # What the built-ins need from the service running them (its settings, the pooled HTTP
    # client): set by the scheduler; None when an executor is called by hand.
    services: ExecutorServices | None = field(default=None, repr=False, compare=False)


Executor = Callable[[dict[str, Any], ExecutionContext], Any | Awaitable[Any]]
