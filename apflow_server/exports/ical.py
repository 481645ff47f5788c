"""iCalendar export of scheduled tasks: one VEVENT per task, built with `icalendar`.

Fidelity is the contract: expanding the calendar with an RFC 5545 library gives exactly the
instants the scheduler fires at (the engine's own `next_run_at`, then `Schedule.next_after` on
and on, within `schedule_end_at` and `max_runs`), in any time zone, across DST. Jitter is not
shown: it delays when an occurrence is due, not the occurrence (docs/decisions.md).

The event of a task:

- UID `<task id>@apflow`, stable for the task's lifetime; SUMMARY the task's name; DESCRIPTION
  one fact per line (id, schedule, zone, bounds, runs, executor, the *names* of the inputs:
  their values can be secrets and a feed ends up in calendar clouds); URL
  `<base_url>/tasks/<task id>` when a base_url is given; DURATION the exporter's default;
  TRANSP:TRANSPARENT (a task run does not make its owner busy); DTSTAMP the export time.
- DTSTART is the task's `next_run_at`. A task without one (disabled, exhausted) has no event.
  It is written in the task's zone (with a VTIMEZONE) wherever that zone's wall-clock time
  names the instant; an RRULE that must run on elapsed time starts in UTC instead.

How each schedule becomes a recurrence (`plan_occurrences`, in schedules/to_rrule.py):

- `once`: DTSTART alone.
- `interval`: an RRULE with FREQ=SECONDLY/MINUTELY/HOURLY/DAILY and INTERVAL. Intervals run on
  elapsed time, so DTSTART is in UTC (expansion in local time would gain or lose an hour at a
  DST change); in a zone whose offset does not change it is written in that zone.
- `daily`, `weekly`, `monthly` and cron: an RRULE in the task's zone, which RFC 5545 expands on
  the wall clock exactly as the engine does (a time in a spring-forward gap read with the
  offset before the gap, a repeated time at its first occurrence). Daily FREQ=DAILY; weekly
  FREQ=WEEKLY;BYDAY; monthly FREQ=MONTHLY;BYMONTHDAY (`L` is -1; a month without day 31 has no
  31st in both); several times BYHOUR and BYMINUTE, with BYSETPOS picking the listed ones
  when they are not every combination of those. Cron fields map to BYMONTH, BYMONTHDAY,
  BYDAY, BYHOUR, BYMINUTE and BYSECOND (`L` is -1, `5#2` is 2FR). Each DST transition of the
  next ten years where the wall-clock reading could differ from the engine is checked
  against the engine itself: a cron that fires every hour runs on elapsed time (it fires in
  both passes of a repeated hour and not in a gap), and some sets of times collide in a gap.
  Where they differ:
  - every-hour crons without day restrictions become an RRULE in UTC when the zone's offsets
    all give the same UTC minutes (`*/15 * * * *` in Berlin: FREQ=HOURLY;BYMINUTE=0,15,30,45);
  - otherwise the differences are patched: EXDATE for a wall-clock reading the engine does not
    fire, RDATE (UTC) for an instant it fires that the rule misses, with UNTIL at the end of
    the checked period (Lord Howe's hourly job: one EXDATE a year);
  - and when even that is impossible (two readings of one instant, a COUNT that patches
    would shift), RDATEs.
- Whatever no single RRULE expresses (Vixie cron's day-of-month OR day-of-week, `W`) is
  expanded into RDATEs (UTC) from the engine: the occurrences within `horizon` (default a
  year) of now, at most `max_occurrences` of them.

COUNT is `max_runs - run_count` (DTSTART is the next run), UNTIL is `schedule_end_at` in UTC;
when both bind, whichever ends the schedule first is written. Instants below a second cannot be
written (RFC 5545 has none): a grid anchored on a fraction of a second shows truncated.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import quote, urlencode

from icalendar import Calendar, Event

from apflow_server.core.compute import off_loop
from apflow_server.core.errors import ValidationError
from apflow_server.schedules.to_rrule import (
    DEFAULT_HORIZON,
    DEFAULT_MAX_OCCURRENCES,
    RRULE_CHECK_HORIZON,
    Occurrences,
    PlannedTask,
    plan_occurrences,
)
from apflow_server.storage.repository import MAX_PAGE, TaskRepository

logger = logging.getLogger(__name__)

PRODID = "-//apflow-server//Scheduled tasks//EN"
DEFAULT_CALENDAR_NAME = "APFlow Tasks"


class CalendarTask(PlannedTask, Protocol):
    """What the exporter reads from a task: the ORM row, or any object with these fields."""

    name: str
    inputs: dict[str, Any]
    params: dict[str, Any]


# ---------------------------------------------------------------------- public API


def generate_ical_feed_url(
    base_url: str, user_id: str | None = None, api_key: str | None = None
) -> str:
    """The URL a calendar app subscribes to: `<base_url>/scheduler/ical?user_id=…&api_key=…`.

    The query is URL-encoded; parameters that are not given are left out.
    """
    url = f"{base_url.rstrip('/')}/scheduler/ical"
    params = {name: value for name, value in (("user_id", user_id), ("api_key", api_key)) if value}
    return f"{url}?{urlencode(params)}" if params else url


def task_url(base_url: str, task_id: str) -> str:
    """The event's URL: the task's page in the dashboard (`<base_url>/ui/tasks/<task id>`),
    which a calendar app opens in a browser (the API's /tasks/ answers only JSON-RPC POSTs)."""
    return f"{base_url.rstrip('/')}/ui/tasks/{quote(task_id, safe='')}"


class ICalExporter:
    """Scheduled tasks as an RFC 5545 calendar.

    `repository` defaults to `TaskRepository()`, the database of the environment. `horizon`
    and `max_occurrences` bound the schedules that have to be written as a list of dates.
    """

    def __init__(
        self,
        calendar_name: str = DEFAULT_CALENDAR_NAME,
        base_url: str | None = None,
        default_duration_minutes: int = 30,
        repository: TaskRepository | None = None,
        *,
        horizon: timedelta = DEFAULT_HORIZON,
        max_occurrences: int = DEFAULT_MAX_OCCURRENCES,
    ) -> None:
        _check_duration(default_duration_minutes)
        self.calendar_name = calendar_name
        self.base_url = base_url
        self.default_duration_minutes = default_duration_minutes
        self.repository = repository if repository is not None else TaskRepository()
        self.horizon = horizon
        self.max_occurrences = max_occurrences

    async def export_tasks(
        self, user_id: str | None = None, enabled_only: bool = True, limit: int = MAX_PAGE
    ) -> str:
        """The calendar of the scheduled tasks (of `user_id`, when given) as RFC 5545 text."""
        tasks = await self.fetch_tasks(user_id=user_id, enabled_only=enabled_only, limit=limit)
        # Schedules written as dates ask the engine for up to a year of occurrences: CPU work
        # that must not stall the event loop of a server.
        return await off_loop(self.render, tasks)

    def render(self, tasks: Iterable[CalendarTask], now: datetime | None = None) -> str:
        """The calendar of `tasks` as RFC 5545 text."""
        text: bytes = self.build_calendar(tasks, now).to_ical()
        return text.decode("utf-8")

    async def fetch_tasks(
        self, *, user_id: str | None = None, enabled_only: bool = True, limit: int = MAX_PAGE
    ) -> list[CalendarTask]:
        """Up to `limit` scheduled tasks, soonest first (paged through the repository)."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValidationError("limit", "must be a whole number, at least 1")
        tasks: list[CalendarTask] = []
        seen: set[str] = set()
        offset = 0
        while len(tasks) < limit:
            page = await self.repository.list_scheduled(
                enabled_only=enabled_only,
                user_id=user_id,
                limit=min(MAX_PAGE, limit - len(tasks)),
                offset=offset,
            )
            for task in page.items:
                if task.id not in seen:
                    seen.add(task.id)
                    tasks.append(task)
            offset += len(page.items)
            if not page.items or offset >= page.total:
                break
        await self.repository.attach_calendars(tasks)
        return tasks

    def build_calendar(
        self, tasks: Iterable[CalendarTask], now: datetime | None = None
    ) -> Calendar:
        return build_calendar(
            tasks,
            calendar_name=self.calendar_name,
            base_url=self.base_url,
            default_duration_minutes=self.default_duration_minutes,
            now=now,
            horizon=self.horizon,
            max_occurrences=self.max_occurrences,
        )


def build_calendar(
    tasks: Iterable[CalendarTask],
    calendar_name: str = DEFAULT_CALENDAR_NAME,
    base_url: str | None = None,
    default_duration_minutes: int = 30,
    now: datetime | None = None,
    *,
    horizon: timedelta = DEFAULT_HORIZON,
    max_occurrences: int = DEFAULT_MAX_OCCURRENCES,
) -> Calendar:
    """A VCALENDAR with one VEVENT per task that has a next run, and the VTIMEZONEs they use.

    Pure: no I/O; `now` (default: the current time) is the DTSTAMP and where the bounded
    windows start.
    """
    _check_duration(default_duration_minutes)
    stamp = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    calendar = Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    calendar.add("x-wr-calname", calendar_name)
    calendar.add("name", calendar_name)
    starts: list[date] = []
    for task in tasks:
        try:
            event = task_event(
                task,
                now=stamp,
                base_url=base_url,
                duration=timedelta(minutes=default_duration_minutes),
                horizon=horizon,
                max_occurrences=max_occurrences,
            )
        except ValidationError as error:  # a stored schedule that no longer parses
            logger.warning("task %s left out of the calendar: %s", task.id, error)
            continue
        if event is not None:
            calendar.add_component(event)
            starts.append(event.decoded("dtstart").date())
    if starts:
        # One VTIMEZONE per zone used, covering the events from their first start on.
        last = max(date(2038, 1, 1), (stamp + RRULE_CHECK_HORIZON).date() + timedelta(days=1))
        calendar.add_missing_timezones(first_date=min(starts) - timedelta(days=1), last_date=last)
    return calendar


def task_event(
    task: CalendarTask,
    *,
    now: datetime,
    base_url: str | None = None,
    duration: timedelta = timedelta(minutes=30),
    horizon: timedelta = DEFAULT_HORIZON,
    max_occurrences: int = DEFAULT_MAX_OCCURRENCES,
) -> Event | None:
    """The VEVENT of one task, or None when it has no next run."""
    plan = plan_occurrences(task, now=now, horizon=horizon, max_occurrences=max_occurrences)
    if plan is None:
        return None
    event = Event()
    event.add("uid", f"{task.id}@apflow")
    event.add("dtstamp", now.astimezone(UTC).replace(microsecond=0))
    event.add("dtstart", plan.start)
    event.add("duration", duration)
    event.add("summary", task.name)
    url = task_url(base_url, task.id) if base_url else None
    event.add("description", describe(task))
    if url:
        event.add("url", url)
    event.add("transp", "TRANSPARENT")
    updated = getattr(task, "updated_at", None)
    if isinstance(updated, datetime) and updated.tzinfo is not None:
        event.add("last-modified", updated.astimezone(UTC).replace(microsecond=0))
    if plan.rrule is not None:
        event.add("rrule", plan.rrule)
    if plan.rdates:
        event.add("rdate", list(plan.rdates))
    if plan.exdates:
        event.add("exdate", list(plan.exdates))
    return event


def describe(task: CalendarTask) -> str:
    """The event's DESCRIPTION: one fact per line."""
    lines = [
        f"Task ID: {task.id}",
        f"Schedule: {task.schedule_type} {task.schedule_expression}",
        f"Timezone: {task.schedule_timezone}",
    ]
    if task.schedule_start_at is not None:
        lines.append(f"Starts: {task.schedule_start_at.isoformat()}")
    if task.schedule_end_at is not None:
        lines.append(f"Ends: {task.schedule_end_at.isoformat()}")
    if task.max_runs is not None:
        lines.append(f"Runs: {task.run_count} of {task.max_runs}")
    else:
        lines.append(f"Runs: {task.run_count}")
    params = task.params if isinstance(task.params, dict) else {}
    executor = params.get("executor_id")
    if executor:
        lines.append(f"Executor: {executor}")
    inputs = task.inputs if isinstance(task.inputs, dict) else {}
    names = sorted(str(name) for name in inputs)
    shown = ", ".join(names[:20]) + (f", … ({len(names)} in all)" if len(names) > 20 else "")
    lines.append(f"Inputs: {shown or 'none'}")
    return "\n".join(lines)


def _check_duration(minutes: int) -> None:
    if isinstance(minutes, bool) or not isinstance(minutes, int) or minutes < 1:
        raise ValidationError("default_duration_minutes", "must be a whole number, at least 1")


__all__ = [
    "DEFAULT_CALENDAR_NAME",
    "CalendarTask",
    "ICalExporter",
    "Occurrences",
    "build_calendar",
    "describe",
    "generate_ical_feed_url",
    "plan_occurrences",
    "task_event",
    "task_url",
]
