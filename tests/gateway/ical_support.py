"""Helpers for the iCalendar export tests (no tests of its own besides a sanity check).

A `CalendarTask` stands in for a Task row: the exporter reads only these fields. `scheduled`
fills in `schedule_anchor_at` and `next_run_at` the way TaskRepository does when a schedule is
enabled, so the calendar starts where the scheduler would.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import recurring_ical_events
from icalendar import Calendar

from apflow_server.core.types import ScheduleType
from apflow_server.schedules.expressions import IntervalRecurrence
from apflow_server.schedules.plan import first_fire, schedule_of

ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata")
YEAR = timedelta(days=365)


@dataclass
class CalendarTask:
    id: str
    name: str = "A task"
    user_id: str | None = None
    schedule_type: str | None = None
    schedule_expression: str | None = None
    schedule_timezone: str = "UTC"
    schedule_enabled: bool = True
    schedule_start_at: datetime | None = None
    schedule_end_at: datetime | None = None
    schedule_anchor_at: datetime | None = None
    schedule_jitter_seconds: int = 0
    max_runs: int | None = None
    run_count: int = 0
    next_run_at: datetime | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)


def scheduled(
    schedule_type: str,
    expression: str,
    timezone: str,
    now: datetime,
    *,
    task_id: str = "task-1",
    **fields: Any,
) -> CalendarTask:
    """An enabled task as the repository stores it at `now` (anchor and next_run_at set)."""
    task = CalendarTask(
        id=task_id,
        schedule_type=schedule_type,
        schedule_expression=expression,
        schedule_timezone=timezone,
        **fields,
    )
    schedule = schedule_of(task)
    if isinstance(schedule.recurrence, IntervalRecurrence) and task.schedule_start_at is None:
        task.schedule_anchor_at = now.replace(microsecond=0) + schedule.recurrence.period
        schedule = schedule_of(task)
    task.next_run_at = first_fire(schedule, task, now)
    assert task.next_run_at is not None, "the schedule never fires"
    return task


def engine_instants(task: CalendarTask, end: datetime) -> list[datetime]:
    """What the scheduler fires from next_run_at on, before `end`: next_run_at, then the
    engine's own `Schedule.preview` after it (which honours max_runs and the bounds)."""
    schedule = schedule_of(task)
    first = task.next_run_at
    assert first is not None
    remaining = None if task.max_runs is None else task.max_runs - task.run_count
    if (remaining is not None and remaining <= 0) or first >= end:
        return []
    found = [first]
    if schedule.type is ScheduleType.ONCE:
        return found
    while True:
        left = None if remaining is None else remaining - len(found)
        batch = schedule.preview(1000, found[-1], left)
        for fire in batch:
            if fire >= end:
                return found
            found.append(fire)
        if len(batch) < 1000:
            return found


def expand(calendar: Calendar, start: datetime, end: datetime) -> list[datetime]:
    """The event starts in [start, end) in UTC, sorted (duplicates kept), as a calendar reader
    sees them: the calendar goes through its RFC 5545 text first.

    recurring-ical-events computes an occurrence's end as its wall-clock start plus DURATION,
    so an occurrence at a gap time (02:30 on a 02:00 -> 03:00 day, which starts at 03:30) ends
    "at 03:00", before it starts, and a span beginning between the two leaves it out. The span
    asked for therefore begins a day early; the starts are filtered here.
    """
    parsed = Calendar.from_ical(calendar.to_ical())
    found = []
    for occurrence in recurring_ical_events.of(parsed).between(start - timedelta(days=1), end):
        instant = occurrence["DTSTART"].dt.astimezone(UTC)
        if start <= instant < end:
            found.append(instant)
    return sorted(found)


def test_scheduled_matches_the_repository_rules() -> None:
    now = datetime(2025, 1, 10, 10, 17, 23, 456000, tzinfo=UTC)
    task = scheduled("interval", "2h", "Europe/Berlin", now)
    assert task.schedule_anchor_at == datetime(2025, 1, 10, 12, 17, 23, tzinfo=UTC)
    assert task.next_run_at == task.schedule_anchor_at
    assert engine_instants(task, task.next_run_at + timedelta(hours=5)) == [
        task.next_run_at,
        task.next_run_at + timedelta(hours=2),
        task.next_run_at + timedelta(hours=4),
    ]
