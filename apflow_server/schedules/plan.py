"""A stored task's schedule, and what its next occurrence is. Pure: works on any object with
the task's schedule attributes (the ORM row, or a plain dataclass in tests)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from apflow_server.core.errors import ValidationError
from apflow_server.core.task_fields import SCHEDULE_FIELDS, validate_task_fields
from apflow_server.core.types import CalendarRule, ScheduleType
from apflow_server.schedules.expressions import IntervalRecurrence
from apflow_server.schedules.schedule import Schedule, jitter_delay
from apflow_server.schedules.timezones import get_zone, resolve_local

if TYPE_CHECKING:  # the calendars module loads the holidays tables: imported when used
    from apflow_server.schedules.calendars import BusinessCalendar, CalendarSchedule

# A schedule, or a schedule under a business calendar (the same interface).
Timetable: TypeAlias = "Schedule | CalendarSchedule"


class ScheduledTask(Protocol):
    id: str
    schedule_type: str | None
    schedule_expression: str | None
    schedule_timezone: str
    schedule_start_at: datetime | None
    schedule_end_at: datetime | None
    schedule_anchor_at: datetime | None
    schedule_jitter_seconds: int
    max_runs: int | None
    run_count: int


class ScheduledRow(ScheduledTask, Protocol):
    """A task whose schedule position can be moved."""

    schedule_enabled: bool
    next_run_at: datetime | None
    due_at: datetime | None


def localise(value: datetime | None, timezone: str) -> datetime | None:
    """A bound without an offset is a wall-clock time in the task's zone (RFC 5545 rules)."""
    if value is None or value.tzinfo is not None:
        return value
    return resolve_local(value, get_zone(timezone)).first


def schedule_of(task: ScheduledTask) -> Timetable:
    """The task's schedule; under its business calendar when it names one (the storage layer
    puts the calendar's closed days on the task as `loaded_calendar` first)."""
    if task.schedule_type is None:
        raise ValidationError("schedule_type", "the task has no schedule")
    name = getattr(task, "schedule_calendar", None)
    if name is None:
        return _parsed(
            task.schedule_type,
            task.schedule_expression,
            task.schedule_timezone,
            task.schedule_start_at,
            task.schedule_end_at,
            task.schedule_anchor_at,
        )
    calendar = getattr(task, "loaded_calendar", None)
    if calendar is None:
        raise ValidationError("schedule_calendar", f"no calendar named {name!r}")
    rule = getattr(task, "schedule_calendar_rule", None) or CalendarRule.SKIP.value
    return _under_calendar(
        task.schedule_type,
        task.schedule_expression,
        task.schedule_timezone,
        task.schedule_start_at,
        task.schedule_end_at,
        task.schedule_anchor_at,
        calendar,
        rule,
    )


def draft_schedule(
    fields: Mapping[str, Any], *, default_timezone: str, now: datetime
) -> tuple[Schedule, int | None]:
    """The schedule that unsaved task fields describe, and the runs its max_runs allows (a
    preview of what creating the task would do). An interval without a start counts from
    `now`, as enabling it would."""
    clean = validate_task_fields(fields, creating=False)
    if clean.get("schedule_calendar") is not None:
        # A calendar is a stored task's user's: a draft has none.
        raise ValidationError(
            "schedule_calendar", "preview a stored task to see its calendar's effect"
        )
    if unknown := sorted(set(clean) - SCHEDULE_FIELDS):
        raise ValidationError(unknown[0], "unknown field")
    schedule_type, expression = clean.get("schedule_type"), clean.get("schedule_expression")
    if schedule_type is None:
        raise ValidationError("schedule_type", "is required for a preview")
    if not expression:
        raise ValidationError("schedule_expression", "is required for a preview")
    timezone = clean.get("schedule_timezone", default_timezone)
    start_at = localise(clean.get("schedule_start_at"), timezone)
    end_at = localise(clean.get("schedule_end_at"), timezone)
    schedule = _parsed(schedule_type, expression, timezone, start_at, end_at, None)
    if isinstance(schedule.recurrence, IntervalRecurrence) and schedule.start_at is None:
        anchor = _interval_anchor(schedule, now)
        schedule = _parsed(schedule_type, expression, timezone, start_at, end_at, anchor)
    return schedule, clean.get("max_runs")


def _interval_anchor(schedule: Timetable, now: datetime) -> datetime:
    """Where an interval schedule enabled (or previewed) at `now` starts counting: its first
    occurrence is one period after now, in whole seconds."""
    recurrence = schedule.recurrence
    assert isinstance(recurrence, IntervalRecurrence)
    return now.replace(microsecond=0) + recurrence.period


def _counts_business_days(expression: str | None) -> bool:
    return bool(expression) and str(expression).strip().upper().startswith("BD")


@lru_cache(maxsize=4096)
def _under_calendar(
    schedule_type: str,
    expression: str | None,
    timezone: str,
    start_at: datetime | None,
    end_at: datetime | None,
    anchor_at: datetime | None,
    calendar: BusinessCalendar,
    rule: str,
) -> CalendarSchedule:
    from apflow_server.schedules.calendars import (  # the holidays tables: only when used
        CalendarSchedule,
        business_day_schedule,
        is_business_day_expression,
        parse_calendar_rule,
    )

    if is_business_day_expression(expression):
        if schedule_type != ScheduleType.MONTHLY.value:
            raise ValidationError("schedule_expression", "BD1 ... BDL are monthly expressions")
        base = business_day_schedule(
            str(expression), calendar, timezone, start_at=start_at, end_at=end_at,
            anchor_at=anchor_at,
        )  # fmt: skip
    else:
        base = _parsed(schedule_type, expression, timezone, start_at, end_at, anchor_at)
    return CalendarSchedule(base, calendar, parse_calendar_rule(rule, "schedule_calendar_rule"))


# Schedules are immutable values: a scheduler claiming many tasks of a few shapes parses each
# shape once. Invalid ones raise and are not cached.
@lru_cache(maxsize=4096)
def _parsed(
    schedule_type: str,
    expression: str | None,
    timezone: str,
    start_at: datetime | None,
    end_at: datetime | None,
    anchor_at: datetime | None,
) -> Schedule:
    if _counts_business_days(expression):
        raise ValidationError(
            "schedule_expression",
            "BD1 ... BDL count business days: name a schedule_calendar to count them in",
        )
    return Schedule.parse(
        schedule_type, expression, timezone, start_at=start_at, end_at=end_at, anchor_at=anchor_at
    )


def runs_exhausted(task: ScheduledTask) -> bool:
    return task.max_runs is not None and task.run_count >= task.max_runs


def first_fire(schedule: Timetable, task: ScheduledTask, now: datetime) -> datetime | None:
    """The occurrence a freshly enabled (or re-initialised) schedule waits for."""
    return None if runs_exhausted(task) else schedule.first_fire(now)


def fire_after(schedule: Timetable, task: ScheduledTask, after: datetime) -> datetime | None:
    """The occurrence after `after`, or None when the schedule is over (end, max_runs, once)."""
    if runs_exhausted(task) or schedule.type is ScheduleType.ONCE:
        return None
    return schedule.next_after(after)


def set_next_run(task: ScheduledRow, next_run: datetime | None) -> None:
    """Point the schedule at its next occurrence, or disable it when there is none."""
    task.next_run_at = next_run
    task.due_at = due_time(task, next_run)
    if next_run is None:
        task.schedule_enabled = False


DEFAULT_TRIGGER_GRACE_SECONDS = 300


def due_time(task: ScheduledTask, next_run_at: datetime | None) -> datetime | None:
    """When the occurrence at `next_run_at` becomes due: its instant plus the task's jitter.
    For an external schedule (fired by an outside scheduler, watched here), when it becomes
    overdue: its instant plus the grace its trigger has to arrive."""
    if next_run_at is None:
        return None
    if is_external(task):
        return next_run_at + timedelta(seconds=trigger_grace(task))
    return next_run_at + jitter_delay(task.id, next_run_at, task.schedule_jitter_seconds)


def is_external(task: Any) -> bool:
    return getattr(task, "schedule_mode", None) == "external"


def trigger_grace(task: Any) -> int:
    grace = getattr(task, "trigger_grace_seconds", None)
    return DEFAULT_TRIGGER_GRACE_SECONDS if grace is None else int(grace)


def fires_ahead(
    schedule: Timetable,
    count: int,
    start: datetime,
    remaining: int | None,
    *,
    strictly_after: bool,
    between_steps: Callable[[], None] | None = None,
) -> list[datetime]:
    """A preview: the next `count` fire times from `start`, at most `remaining`. A `once` that
    is past but has not run is shown, since it is due now, unless asked `strictly_after`."""
    if schedule.type is ScheduleType.ONCE:
        when = schedule.first_fire(start)
        if when is None or remaining == 0 or (strictly_after and when <= start):
            return []
        return [when]
    return schedule.preview(count, start, remaining, between_steps=between_steps)


def occurrences_due(
    schedule: Timetable, task: ScheduledTask, first: datetime, until: datetime, limit: int
) -> tuple[list[datetime], datetime | None]:
    """Occurrences from `first` (inclusive) that are due by `until`, at most `limit` of them,
    and the occurrence that follows them (None when the schedule ends)."""
    found: list[datetime] = []
    current: datetime | None = first
    while current is not None and len(found) < limit:
        due = due_time(task, current)
        if due is None or due > until:
            break
        found.append(current)
        current = schedule.next_after(current)
    return found, current


def occurrences_between(
    schedule: Timetable,
    start: datetime,
    end: datetime,
    limit: int,
    between_steps: Callable[[], None] | None = None,
) -> list[datetime]:
    """The schedule's occurrences in [start, end), oldest first, at most `limit` of them (a
    caller that asks for one more than it accepts learns the period holds too many).
    `between_steps` is called before each step; it may raise to stop a long search."""
    if schedule.type is ScheduleType.ONCE:
        when = schedule.first_fire(start)
        return [when] if when is not None and start <= when < end and limit > 0 else []
    found: list[datetime] = []
    current = schedule.next_after(start - timedelta(microseconds=1))
    while current is not None and current < end and len(found) < limit:
        found.append(current)
        if between_steps is not None:
            between_steps()
        current = schedule.next_after(current)
    return found


class ParentedRow(ScheduledRow, Protocol):
    parent_id: str | None


# The fields that move an interval's grid: changing one re-anchors it.
GRID_FIELDS = frozenset({"schedule_type", "schedule_expression", "schedule_start_at"})


def apply_schedule(
    task: ParentedRow, values: dict[str, Any], now: datetime, *, was_enabled: bool
) -> None:
    """Write schedule fields onto a task and keep the invariant: enabled ⇔ next_run_at is
    set. Raises ValidationError (naming the field) for a schedule that cannot be stored."""
    if not values:
        return
    if task.parent_id is not None and (
        values.get("schedule_type") or values.get("schedule_enabled")
    ):
        raise ValidationError(
            "schedule_type", "only a root task can be scheduled (its whole tree runs)"
        )
    grid_changed = bool(GRID_FIELDS & values.keys())
    for name, value in values.items():
        setattr(task, name, value)
    # Bounds without an offset are wall-clock times in the task's zone.
    task.schedule_start_at = localise(task.schedule_start_at, task.schedule_timezone)
    task.schedule_end_at = localise(task.schedule_end_at, task.schedule_timezone)
    if task.schedule_type is None:
        if task.schedule_enabled:
            raise ValidationError("schedule_type", "an enabled schedule needs a type")
        task.next_run_at = task.due_at = task.schedule_anchor_at = None
        return
    if not task.schedule_expression:
        raise ValidationError(
            "schedule_expression", f"a {task.schedule_type} schedule needs an expression"
        )
    schedule = schedule_of(task)  # validates type, expression, zone and bounds
    if not task.schedule_enabled:
        task.next_run_at = task.due_at = None
        return
    if isinstance(schedule.recurrence, IntervalRecurrence) and (
        grid_changed or not was_enabled or task.schedule_anchor_at is None
    ):
        task.schedule_anchor_at = _interval_anchor(schedule, now)
    schedule = schedule_of(task)
    next_run = first_fire(schedule, task, now)
    if next_run is None:
        raise _why_never(task, schedule)
    task.next_run_at = next_run
    task.due_at = due_time(task, next_run)


def next_run_from(
    schedule: Timetable, task: ScheduledTask, now: datetime, start: datetime | None
) -> datetime | None:
    """Where `tasks.scheduled.init` puts a schedule: its first fire from now, or the first
    occurrence after `start` (None when nothing is left)."""
    if start is None:
        return first_fire(schedule, task, now)
    if runs_exhausted(task):
        return None
    if schedule.type is ScheduleType.ONCE:
        when = schedule.first_fire(start)
        return when if when and when > start else None
    return schedule.next_after(start)


def _why_never(task: ScheduledTask, schedule: Timetable) -> ValidationError:
    if runs_exhausted(task):
        return ValidationError(
            "max_runs", f"already reached ({task.run_count} runs); raise it to enable the schedule"
        )
    if schedule.end_at is not None:
        return ValidationError("schedule_end_at", "no occurrence is left before this end bound")
    return ValidationError("schedule_expression", "the schedule has no future occurrence")
