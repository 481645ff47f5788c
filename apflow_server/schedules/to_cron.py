"""A schedule as one standard 5-field cron expression, for an external scheduler.

Pure: no I/O, no clock. The expression is read in the schedule's own zone: the caller runs it
there (Kubernetes `spec.timeZone`, a crontab's `CRON_TZ=` line). "Equivalent" means that this
service's schedule engine gives the converted expression, as a `cron` schedule in the same
zone, exactly the fire times of the original; anything for which no single expression does
that is refused with a `CronConversionError` saying why.

What converts, and to what:

- daily `HH:MM[,HH:MM…]`, weekly `D[,D…] HH:MM[,…]` (ISO 1=Mon … 7=Sun, ranges; cron's
  0=Sun), monthly `N[,N…] HH:MM[,…]`: `minutes hours dom month dow`. Several times make one
  expression only when they are every combination of their hours and minutes (`09:00,09:30,
  17:00,17:30` is `0,30 9,17`; `09:00,17:30` is refused). Times at all 24 hours are refused
  in a zone with daylight-saving time: cron runs such an expression on elapsed time (twice in
  a repeated hour), the wall-clock schedule does not.
- monthly `L` (the last day of the month) is refused: Vixie cron, cronie and Kubernetes have
  no `L`, and a plain expression cannot name the last day.
- interval: elapsed time on a grid through the schedule's anchor (schedule_start_at, else the
  instant the grid was fixed when the schedule was enabled). It converts when the grid is one
  that cron draws in local time, in every UTC offset the zone uses:
  a period dividing an hour (60 s, 5 m, 15 m, 30 m, …) → `*/k * * * *`, or `m-59/k * * * *`
  when the grid is shifted from the top of the hour; one hour → `m * * * *`; a period of
  2, 3, 4, 6, 8, 12 or 24 hours or 7 days only in a zone whose offset never changes (UTC,
  Asia/Tokyo, …), since cron keeps wall-clock time across DST and the interval does not.
  The anchor must fall on a whole minute. An interval without an anchor is refused (the grid
  is not fixed until the schedule is enabled or given a start).
- cron: 5 fields pass through, rewritten into the common subset of Vixie cron, cronie and
  Kubernetes (robfig/cron): names become numbers, weekday 7 becomes 0, `a/n` steps become
  lists. Refused: a 6th (seconds) field, and croniter-only syntax (`L`, `W`, `#`, `?`, `H`).
  For Kubernetes, `*/n` in day-of-month or day-of-week together with a restricted other day
  field is refused too: Vixie cron (and this service) then require both days to match,
  Kubernetes either.
- once: refused, it is not recurring.

`expand_to_cron` serves what none of these express (a business calendar, monthly `L`): the
occurrences of a period of at most a year as cron lines, exact within the period.

Not carried over: schedule_start_at (except as the interval's anchor), schedule_end_at,
max_runs, jitter, misfire and overlap policies. An external scheduler fires the webhook at
each occurrence; the service's webhook route runs whatever it is sent.
"""

from __future__ import annotations

import functools
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from croniter import croniter

from apflow_server.core.errors import ValidationError
from apflow_server.core.types import ScheduleType
from apflow_server.schedules.expressions import (
    FIELD,
    CronRecurrence,
    DayTimesRecurrence,
    IntervalRecurrence,
    normalise_cron,
)
from apflow_server.schedules.plan import Timetable
from apflow_server.schedules.policy import closed_reason
from apflow_server.schedules.schedule import Schedule
from apflow_server.schedules.timezones import ensure_utc

CronTarget = Literal["crontab", "kubernetes"]
TARGETS: tuple[CronTarget, ...] = ("crontab", "kubernetes")

_MINUTE, _HOUR, _DAY = 60, 3600, 86400
_WEEK = 7 * _DAY
# Field names and bounds, in cron order.
_FIELDS = ("minute", "hour", "day of month", "month", "day of week")
_BOUNDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6))
_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_PLAIN = set("0123456789*,-/")
_CRONITER_ONLY = {"L": "L (last)", "W": "W (nearest weekday)", "#": "# (nth weekday)", "?": "?"}


class CronConversionError(ValidationError, ValueError):
    """The schedule has no equivalent standard cron expression (field: schedule_expression)."""

    def __init__(self, message: str) -> None:
        super().__init__(FIELD, message)


def to_cron(
    schedule_type: object,
    expression: object,
    timezone: str = "UTC",
    *,
    start_at: datetime | None = None,
    anchor_at: datetime | None = None,
    target: CronTarget = "crontab",
) -> str:
    """The 5-field cron expression, read in `timezone`, equivalent to this schedule.

    `start_at` / `anchor_at` fix an interval's grid (as a task's schedule_start_at and
    schedule_anchor_at do). Raises ValidationError for an invalid schedule and
    CronConversionError (a ValidationError and a ValueError) for one cron cannot express."""
    schedule = Schedule.parse(
        schedule_type, expression, timezone, start_at=start_at, anchor_at=anchor_at
    )
    return schedule_to_cron(schedule, target=target)


def schedule_to_cron(schedule: Schedule, *, target: CronTarget = "crontab") -> str:
    """The 5-field cron expression, read in the schedule's zone, equivalent to `schedule`."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}")
    recurrence = schedule.recurrence
    what = f"{schedule.type.value} schedule {schedule.expression!r}"
    if schedule.type is ScheduleType.ONCE:
        raise CronConversionError(
            f"a once schedule fires a single time and has no cron equivalent; trigger the "
            f"webhook at {schedule.once_instant().isoformat()} yourself, or use the internal "
            "scheduler"
        )
    if isinstance(recurrence, IntervalRecurrence):
        return _interval(schedule, recurrence.period, what)
    if isinstance(recurrence, CronRecurrence):
        return _cron(recurrence.expression, target, what)
    assert isinstance(recurrence, DayTimesRecurrence)
    return _day_times(recurrence, schedule.zone, what)


# ---------------------------------------------------------------------- daily / weekly / monthly


def _day_times(recurrence: DayTimesRecurrence, zone: ZoneInfo, what: str) -> str:
    hours = sorted({at.hour for at in recurrence.times})
    minutes = sorted({at.minute for at in recurrence.times})
    if len(hours) * len(minutes) != len(recurrence.times):
        given = {(at.hour, at.minute) for at in recurrence.times}
        missing = [f"{h:02d}:{m:02d}" for h in hours for m in minutes if (h, m) not in given]
        raise CronConversionError(
            f"{what} has no single cron equivalent: a cron expression fires at every listed "
            f"minute of every listed hour, so it would also fire at {', '.join(missing)}; "
            "split it into one task per time, or use times that form such a grid"
        )
    if len(hours) == 24 and _has_transitions(zone, _CALENDAR_WINDOW):
        raise CronConversionError(
            f"{what} fires at every hour of the day: in {zone.key}, which changes its UTC "
            "offset, a cron expression with every hour runs on elapsed time (twice in a "
            "repeated hour) while this schedule keeps wall-clock time; use a cron schedule "
            "such as '0 * * * *' if that is what you mean"
        )
    minute_field = _list(minutes, 0, 59)
    hour_field = _list(hours, 0, 23)
    day_field, weekday_field = "*", "*"
    if recurrence.monthdays is not None:
        if 0 in recurrence.monthdays:
            raise CronConversionError(
                f"{what} uses L (the last day of the month), which standard cron (Vixie cron, "
                "cronie) and Kubernetes CronJobs do not support; use explicit days, or the "
                "internal scheduler"
            )
        day_field = _list(sorted(recurrence.monthdays), 1, 31)
    if recurrence.weekdays is not None:
        days = sorted({day % 7 for day in recurrence.weekdays})  # ISO 7 (Sunday) is cron 0
        weekday_field = _list(days, 0, 6)
    return f"{minute_field} {hour_field} {day_field} * {weekday_field}"


# ---------------------------------------------------------------------- interval


def _interval(schedule: Schedule, period: timedelta, what: str) -> str:
    seconds = int(period.total_seconds())
    anchor = schedule.start_at or schedule.anchor_at
    if anchor is None:
        raise CronConversionError(
            f"{what}: the interval's grid is not fixed yet (no schedule_start_at, and the "
            "schedule was never enabled); set schedule_start_at to a whole minute"
        )
    zone = schedule.zone
    local = anchor.astimezone(zone)
    if seconds % _MINUTE or (_HOUR % seconds and seconds % _HOUR):
        raise CronConversionError(
            f"{what}: cron fires on minutes and hours of the clock, so only intervals that "
            "divide an hour (60 s, 5 m, 15 m, 30 m, …) or are 1, 2, 3, 4, 6, 8, 12 or 24 hours "
            "or 7 days convert"
        )
    if local.second or local.microsecond:
        raise CronConversionError(
            f"{what} is anchored at {local.isoformat()}, not on a whole minute, so no cron "
            "expression fires on its grid; set schedule_start_at to a whole minute"
        )
    offsets = _offsets(zone, anchor)
    if _HOUR % seconds == 0 or seconds == _HOUR:
        # Every hour of the day: cron runs on elapsed time, like the interval, as long as
        # every offset of the zone puts the grid on the same minutes of the local hour.
        if len({offset % seconds for offset in offsets}) > 1:
            raise CronConversionError(
                f"{what}: {zone.key} changes its UTC offset by a part of this interval, so "
                "the grid moves on the local clock and no cron expression follows it"
            )
        step = seconds // _MINUTE
        if seconds == _HOUR:
            return f"{local.minute} * * * *"
        phase = local.minute % step
        minute_field = "*" if step == 1 else _step_field(phase, 59, step)
        return f"{minute_field} * * * *"
    if (_DAY % seconds and seconds != _WEEK) or len(offsets) > 1:
        why = (
            f"{zone.key} changes its UTC offset (daylight-saving time): the interval keeps "
            "elapsed time across the change while cron keeps the wall-clock time; use a "
            "daily or weekly schedule"
            if len(offsets) > 1
            else "that period is not a whole number of runs per day"
        )
        raise CronConversionError(f"{what} has no cron equivalent: {why}")
    if seconds == _WEEK:
        return f"{local.minute} {local.hour} * * {local.isoweekday() % 7}"
    step = seconds // _HOUR
    hour_field = str(local.hour) if step == 24 else _step_field(local.hour % step, 23, step)
    return f"{local.minute} {hour_field} * * *"


def _step_field(start: int, last: int, step: int) -> str:
    return f"*/{step}" if start == 0 else f"{start}-{last}/{step}"


# Calendar schedules have no anchor: whether a zone changes its offset is judged over this span.
_CALENDAR_WINDOW = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
# An interval's grid is judged from a year before its anchor to this long after.
_INTERVAL_SPAN = timedelta(days=366 * 40)
_SAMPLE = timedelta(days=7)


def _offsets(zone: ZoneInfo, anchor: datetime) -> set[int]:
    start = datetime(anchor.year - 1, 1, 1, tzinfo=UTC)
    return _offsets_between(zone, start, start + _INTERVAL_SPAN)


def _has_transitions(zone: ZoneInfo, window: tuple[datetime, datetime]) -> bool:
    return len(_offsets_between(zone, *window)) > 1


@functools.lru_cache(maxsize=256)
def _offsets_between(zone: ZoneInfo, start: datetime, end: datetime) -> set[int]:
    """The UTC offsets (seconds) `zone` uses between two instants, sampled weekly (every
    real daylight-saving period lasts weeks)."""
    found: set[int] = set()
    moment = start
    while moment < end:
        offset = moment.astimezone(zone).utcoffset()
        assert offset is not None
        found.add(int(offset.total_seconds()))
        moment += _SAMPLE
    return found


# ---------------------------------------------------------------------- cron


def _cron(expression: str, target: CronTarget, what: str) -> str:
    fields = normalise_cron(expression).split(" ")
    if len(fields) == 6:
        raise CronConversionError(
            f"{what} has a seconds field; standard cron and Kubernetes have minutes at best"
        )
    for name, text in zip(_FIELDS, fields, strict=True):
        rest = _without_names(text.lower(), name)
        for mark, label in _CRONITER_ONLY.items():
            if mark.lower() in rest:
                raise CronConversionError(
                    f"{what} uses {label} in the {name} field, which croniter understands but "
                    "standard cron (Vixie cron, cronie) and Kubernetes do not"
                )
        if "h" in rest:
            raise CronConversionError(
                f"{what} uses H (hashed) in the {name} field, which standard cron and "
                "Kubernetes do not support"
            )
        if not set(rest) <= _PLAIN:
            raise CronConversionError(f"{what}: the {name} field {text!r} is not standard cron")
    expanded = croniter.expand(" ".join(fields))[0]
    rendered = []
    for index, text in enumerate(fields):
        low, high = _BOUNDS[index]
        if _portable(text, high):
            rendered.append(text)  # kept as written (a day field's leading "*" matters)
            continue
        if text.startswith("*"):
            raise CronConversionError(
                f"{what}: the {_FIELDS[index]} field {text!r} is not standard cron"
            )
        values = expanded[index]
        numbers = list(range(low, high + 1)) if values == ["*"] else sorted(set(values))
        rendered.append(_list(numbers, low, high))
    day, weekday = rendered[2], rendered[4]
    if target == "kubernetes" and _step_star(day, weekday):
        raise CronConversionError(
            f"{what} combines a */n day field with a restricted other day field: cron and "
            "this service fire when both days match, Kubernetes (robfig/cron) when either "
            "does, so no Kubernetes schedule is equivalent"
        )
    return " ".join(rendered)


# Items every cron reads alike: `*`, `*/n`, `a`, `a-b`, `a-b/n` (not croniter's `a/n`).
_PORTABLE_ITEM = re.compile(r"^(?:\*(?:/(\d+))?|(\d+)(?:-(\d+)(?:/(\d+))?)?)$")


def _portable(text: str, high: int) -> bool:
    """Whether Vixie cron, cronie and Kubernetes all read this field as croniter does
    (numbers within the field's common bounds: no weekday 7, ranges ascending)."""
    for item in text.split(","):
        match = _PORTABLE_ITEM.match(item)
        if match is None:
            return False
        step, first, last, range_step = match.groups()
        if any(n is not None and int(n) == 0 for n in (step, range_step)):
            return False
        if first is not None and (
            int(first) > high or (last is not None and not int(first) <= int(last) <= high)
        ):
            return False
    return True


def _without_names(text: str, name: str) -> str:
    """The field with its month or weekday names taken out (they become numbers)."""
    names = _MONTH_NAMES if name == "month" else _DAY_NAMES if name == "day of week" else ()
    for known in names:
        text = text.replace(known, "0")
    return text


def _step_star(day: str, weekday: str) -> bool:
    """Vixie cron reads a day field starting with `*` as unrestricted (then both days must
    match); Kubernetes (robfig/cron) does so only for `*` itself."""
    stepped = [text for text in (day, weekday) if text.startswith("*/") and text != "*/1"]
    return bool(stepped) and not (day == "*" or weekday == "*")


def _list(values: Iterable[int], low: int, high: int) -> str:
    """Numbers as a cron list with ranges (`1-5,7`); never `*`, so a day field stays
    restricted."""
    numbers = sorted(set(values))
    if not numbers:
        raise ValueError("a cron field needs at least one value")
    assert low <= numbers[0] and numbers[-1] <= high
    parts: list[str] = []
    start = previous = numbers[0]
    for number in [*numbers[1:], None]:
        if number is not None and number == previous + 1:
            previous = number
            continue
        if previous - start >= 2:
            parts.append(f"{start}-{previous}")
        else:
            parts.extend(str(n) for n in range(start, previous + 1))
        if number is not None:
            start = previous = number
    return ",".join(parts)


# ---------------------------------------------------------------------- a bounded period

# Cron has no year: the lines of an expansion name (month, day, hour, minute), and within a
# period shorter than a year each of those is one instant. Longer periods are refused.
MAX_EXPANSION = timedelta(days=366)
MAX_EXPANDED_LINES = 400
MAX_EXPANDED_FIRES = 50_000


@dataclass(frozen=True)
class BoundedCron:
    """Cron expressions, read in `zone`, that fire at exactly the schedule's occurrences in
    [start, end) and at nothing else in that period. Outside it they fire on the same dates
    of other years, so whatever runs them must do nothing outside it (the generators add a
    guard on the clock). start and end are whole UTC minutes."""

    zone: ZoneInfo
    start: datetime
    end: datetime
    expressions: tuple[str, ...]
    fires: int


def expand_to_cron(schedule: Timetable, start: datetime, end: datetime) -> BoundedCron:
    """The schedule's occurrences in [start, end), as few cron lines as the grouping finds.

    For a schedule no single expression matches: one under a business calendar (its
    occurrences on closed days left out under `skip`, moved under the other rules), or any
    other wall-clock schedule. Occurrences are grouped by their local time and month, then
    merged where the cron fields multiply out to exactly the same instants. Refused: a period
    empty or longer than a year, an occurrence off a whole minute, more than
    MAX_EXPANDED_FIRES occurrences or MAX_EXPANDED_LINES lines."""
    start, end = (
        _whole_minute_up(ensure_utc(start, "start")),
        _whole_minute_up(ensure_utc(end, "end")),
    )
    if end <= start:
        raise ValidationError("end", "must be after start (a period of at least a minute)")
    if end - start > MAX_EXPANSION:
        raise ValidationError(
            "end",
            "cron has no year field: expand a period of at most a year, and generate the "
            "next one before it ends",
        )
    zone = schedule.zone
    times: dict[tuple[int, int, int], set[int]] = defaultdict(set)  # (h, m, month) -> days
    seen: set[tuple[int, int, int, int]] = set()
    fires = 0
    for fire in schedule.occurrences(start - timedelta(microseconds=1)):
        if fire >= end:
            break
        if closed_reason(schedule, fire) is not None:
            continue  # recorded skipped by the internal scheduler: not triggered
        local = fire.astimezone(zone)
        if local.second or local.microsecond:
            raise CronConversionError(
                f"an occurrence at {local.isoformat()} is not on a whole minute; cron fires "
                "on minutes only"
            )
        key = (local.month, local.day, local.hour, local.minute)
        if key in seen:  # a repeated local time (a DST fall-back), or a year-long period
            raise CronConversionError(
                f"two occurrences in the period read {local:%m-%d %H:%M} in {zone.key}; cron "
                "cannot tell them apart: expand a shorter period"
            )
        seen.add(key)
        fires += 1
        if fires > MAX_EXPANDED_FIRES:
            raise ValidationError(
                "end", f"the period holds more than {MAX_EXPANDED_FIRES} occurrences"
            )
        times[(local.hour, local.minute, local.month)].add(local.day)
    lines = _merge_fields(times)
    if len(lines) > MAX_EXPANDED_LINES:
        raise ValidationError(
            "end",
            f"the period needs {len(lines)} cron lines (at most {MAX_EXPANDED_LINES}); "
            "expand a shorter one",
        )
    return BoundedCron(zone, start, end, tuple(lines), fires)


def _whole_minute_up(instant: datetime) -> datetime:
    floor = instant.replace(second=0, microsecond=0)
    return floor if floor == instant else floor + timedelta(minutes=1)


def _merge_fields(times: dict[tuple[int, int, int], set[int]]) -> list[str]:
    """Cron lines for {(hour, minute, month): days}. Each step merges the lines that differ
    in one field only; a line's fields then still multiply out to its own instants."""
    Key = tuple[int, int, frozenset[int]]
    by_months: dict[Key, set[int]] = defaultdict(set)  # (hour, minute, days) -> months
    for (hour, minute, month), days in times.items():
        by_months[(hour, minute, frozenset(days))].add(month)
    by_minutes: dict[tuple[int, frozenset[int], frozenset[int]], set[int]] = defaultdict(set)
    for (hour, minute, day_set), month_set in by_months.items():
        by_minutes[(hour, frozenset(month_set), day_set)].add(minute)
    Fields = tuple[frozenset[int], frozenset[int], frozenset[int]]
    by_hours: dict[Fields, set[int]] = defaultdict(set)  # (minutes, months, days) -> hours
    for (hour, month_set_, day_set_), minute_set in by_minutes.items():
        by_hours[(frozenset(minute_set), month_set_, day_set_)].add(hour)
    lines = [
        (min(months), min(days), min(hours), min(minutes),
         f"{_list(minutes, 0, 59)} {_list(hours, 0, 23)} {_list(days, 1, 31)} "
         f"{_list(months, 1, 12)} *")
        for (minutes, months, days), hours in by_hours.items()
    ]  # fmt: skip
    return [line[-1] for line in sorted(lines)]
