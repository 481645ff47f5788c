"""The vocabulary of the service: enumerations and the webhook verify-hook contract."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from apflow_server.core.errors import ValidationError


class TaskStatus(StrEnum):
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ScheduleType(StrEnum):
    ONCE = "once"
    INTERVAL = "interval"
    CRON = "cron"
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"


def parse_schedule_type(value: object) -> ScheduleType:
    """A schedule type from its name (any case, spaces around it ignored)."""
    try:
        return ScheduleType(str(value).strip().lower())
    except ValueError:
        names = ", ".join(t.value for t in ScheduleType)
        raise ValidationError("schedule_type", f"must be one of {names}") from None


class MisfirePolicy(StrEnum):
    RUN_ONCE = "run_once"
    SKIP = "skip"
    RUN_ALL = "run_all"


class ScheduleMode(StrEnum):
    INTERNAL = "internal"  # the scheduler fires it
    EXTERNAL = "external"  # an outside scheduler calls its webhook; the scheduler watches


class CalendarRule(StrEnum):
    """What an occurrence on a day its business calendar closes does."""

    SKIP = "skip"  # recorded skipped, the reason the day's name
    NEXT = "next_business_day"  # moved to the same wall-clock time on the next business day
    PREVIOUS = "previous_business_day"


class OverlapPolicy(StrEnum):
    SKIP = "skip"
    BUFFER_ONE = "buffer_one"
    BUFFER_ALL = "buffer_all"
    CANCEL_OTHER = "cancel_other"
    TERMINATE_OTHER = "terminate_other"
    ALLOW_ALL = "allow_all"


# Policies under which a due occurrence is claimed while the task runs (the others settle
# what came due when the run ends).
CLAIMED_WHILE_RUNNING = frozenset(
    {
        OverlapPolicy.CANCEL_OTHER.value,
        OverlapPolicy.TERMINATE_OTHER.value,
        OverlapPolicy.ALLOW_ALL.value,
    }
)
# Policies under which a newer run replaces the running one.
REPLACES_RUNNING = frozenset(
    {OverlapPolicy.CANCEL_OTHER.value, OverlapPolicy.TERMINATE_OTHER.value}
)


class RunStatus(StrEnum):
    QUEUED = "queued"  # a backfilled occurrence waiting for a scheduler
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    TERMINATED = "terminated"
    ABANDONED = "abandoned"
    SKIPPED = "skipped"
    MISSED = "missed"


class RunTrigger(StrEnum):
    SCHEDULE = "schedule"
    WEBHOOK = "webhook"
    MANUAL = "manual"
    API = "api"
    BACKFILL = "backfill"


@dataclass(frozen=True)
class WebhookVerifyContext:
    """What a webhook verify hook sees of an incoming trigger request."""

    task_id: str
    signature: str | None = None
    timestamp: str | None = None
    client_ip: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True)
class WebhookVerifyResult:
    """A verify hook's verdict; `user_id` names the caller when the hook knows it."""

    valid: bool
    user_id: str | None = None
    error: str | None = None
