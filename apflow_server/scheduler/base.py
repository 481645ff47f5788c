"""The scheduler's public vocabulary: its configuration, its states and its statistics."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from apflow_server.storage.runs import ClaimedRun, RunResult


class SchedulerState(StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPING = "stopping"
    ERROR = "error"


@dataclass
class SchedulerConfig:
    """How a scheduler runs. The first six fields are the guide's; the rest have safe defaults."""

    poll_interval: float = 60
    max_concurrent_tasks: int = 10
    task_timeout: float = 3600
    retry_on_failure: bool = False
    max_retries: int = 3
    user_id: str | None = None
    retry_backoff_seconds: float = 1
    # How long a graceful stop waits for running runs before cancelling them.
    shutdown_grace_seconds: float = 30
    # How often the instance's heartbeat row is refreshed (None: APFLOW_HEARTBEAT_SECONDS).
    heartbeat_interval: float | None = None
    # Parallel tasks inside one tree run.
    max_parallel_per_run: int = 8

    def __post_init__(self) -> None:
        checks = {
            "poll_interval": self.poll_interval > 0,
            "max_concurrent_tasks": self.max_concurrent_tasks >= 1,
            "task_timeout": self.task_timeout > 0,
            "max_retries": self.max_retries >= 0,
            "retry_backoff_seconds": self.retry_backoff_seconds >= 0,
            "shutdown_grace_seconds": self.shutdown_grace_seconds >= 0,
            "heartbeat_interval": self.heartbeat_interval is None or self.heartbeat_interval > 0,
            "max_parallel_per_run": self.max_parallel_per_run >= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"SchedulerConfig.{name} is out of range: {getattr(self, name)}")


@dataclass
class SchedulerStats:
    state: SchedulerState = SchedulerState.STOPPED
    started_at: datetime | None = None
    tasks_executed: int = 0
    tasks_succeeded: int = 0
    tasks_failed: int = 0
    active_tasks: int = 0
    tasks_timed_out: int = 0
    runs_reclaimed: int = 0
    last_poll_at: datetime | None = None
    next_wake_at: datetime | None = None
    instance_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key, value in data.items():
            if isinstance(value, datetime):
                data[key] = value.isoformat()
        data["state"] = self.state.value
        return data


class RunObserver(Protocol):
    """Told about every run this scheduler starts and finishes (metrics, for instance)."""

    def run_started(self, run: ClaimedRun) -> None: ...

    def run_finished(self, outcome: RunResult) -> None: ...

    def notification_attempted(self, outcome: str) -> None:
        """A notification delivery attempt ended: delivered, retrying or failed."""
