"""The events a user can be notified of, and the shape of an event before it is delivered."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

RUN_FAILED = "run.failed"
RUN_SUCCEEDED = "run.succeeded"
RUN_MISSED = "run.missed"
RUN_SKIPPED = "run.skipped"
RUN_LATE = "run.late"
RUN_TOO_LONG = "run.too_long"
SCHEDULE_PAUSED = "schedule.paused"
SCHEDULE_RESUMED = "schedule.resumed"
SCHEDULE_RECOVERED = "schedule.recovered"
TRIGGER_OVERDUE = "trigger.overdue"
PING = "ping"

EVENT_TYPES = (
    RUN_FAILED,
    RUN_SUCCEEDED,
    RUN_MISSED,
    RUN_SKIPPED,
    RUN_LATE,
    RUN_TOO_LONG,
    SCHEDULE_PAUSED,
    SCHEDULE_RESUMED,
    SCHEDULE_RECOVERED,
    TRIGGER_OVERDUE,
    PING,
)
# What an endpoint created without a list of events receives: everything that means something
# went wrong or changed, not every success (run.succeeded is asked for by name).
DEFAULT_EVENTS = tuple(name for name in EVENT_TYPES if name not in {RUN_SUCCEEDED, PING})


@dataclass(frozen=True)
class Event:
    """Something that happened to one user's task, to be sent to that user's endpoints that
    asked for its type. `endpoint_id` narrows it to one endpoint (a test ping)."""

    type: str
    user_id: str | None
    data: dict[str, Any] = field(default_factory=dict)
    endpoint_id: str | None = None
