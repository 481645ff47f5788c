"""Parsing schedule expressions into recurrences.

A recurrence is pure calendar data. Wall-clock recurrences (cron, daily, weekly, monthly)
produce naive local times in ascending order; the schedule maps them to instants in its zone.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Protocol

from croniter import croniter

from apflow_server.core.errors import ValidationError

FIELD = "schedule_expression"


class WallClockRecurrence(Protocol):
    """Local wall-clock times, ascending, from a naive local start (inclusive)."""

    @property
    def elapsed(self) -> bool:
        """True when it fires every hour of the day: it then runs on elapsed time through a
        transition (both passes of a repeated hour fire; a skipped hour does not)."""
        ...

    def iter_local(self, start: datetime) -> Iterator[datetime]: ...


@dataclass(frozen=True)
class IntervalRecurrence:
    period: timedelta


@dataclass(frozen=True)
class OnceRecurrence:
    when: datetime  # aware when the expression had an offset, else naive local


# ---------------------------------------------------------------------- interval

_INTERVAL_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_INTERVAL_RE = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
MAX_INTERVAL_SECONDS = 366 * 86400 * 10


def parse_interval(expression: str) -> IntervalRecurrence:
    match = _INTERVAL_RE.match(expression)
    if not match:
        raise ValidationError(
            FIELD, f"interval {expression!r} must be whole seconds (3600) or 90s, 15m, 2h, 1d"
        )
    seconds = int(match.group(1)) * _INTERVAL_UNITS[match.group(2) or "s"]
    if seconds <= 0:
        raise ValidationError(FIELD, "interval must be positive")
    if seconds > MAX_INTERVAL_SECONDS:
        raise ValidationError(FIELD, "interval must be at most ten years")
    return IntervalRecurrence(timedelta(seconds=seconds))


# ---------------------------------------------------------------------- once


def parse_once(expression: str) -> OnceRecurrence:
    text = expression.strip()
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(
            FIELD, f"once {expression!r} must be an ISO 8601 datetime, e.g. 2025-01-15T09:00:00Z"
        ) from None
    return OnceRecurrence(when)


# ---------------------------------------------------------------------- daily / weekly / monthly

_TIME_RE = re.compile(r"^(\d{1,2}):(\d{2})$")


def _parse_times(text: str) -> tuple[time, ...]:
    times = set()
    for part in text.split(","):
        match = _TIME_RE.match(part.strip())
        if not match:
            raise ValidationError(FIELD, f"time {part.strip()!r} must be HH:MM")
        hour, minute = int(match.group(1)), int(match.group(2))
        if hour > 23 or minute > 59:
            raise ValidationError(FIELD, f"time {part.strip()!r} is not a time of day")
        times.add(time(hour, minute))
    return tuple(sorted(times))


def _parse_numbers(text: str, low: int, high: int, what: str, allow_last: bool) -> frozenset[int]:
    """A comma list of numbers and ranges; `L` (the last day) is returned as 0."""
    values: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if allow_last and part.upper() == "L":
            values.add(0)
            continue
        bounds = part.split("-")
        if len(bounds) > 2 or not all(b.strip().isdigit() for b in bounds):
            raise ValidationError(FIELD, f"{what} {part!r} must be a number or a range like 1-5")
        first, last = int(bounds[0]), int(bounds[-1])
        if not (low <= first <= high and low <= last <= high) or first > last:
            raise ValidationError(FIELD, f"{what} {part!r} must lie in {low}..{high}")
        values.update(range(first, last + 1))
    return frozenset(values)


def _split_days_and_times(expression: str, kind: str, example: str) -> tuple[str, str]:
    parts = expression.split()
    if len(parts) != 2:
        raise ValidationError(FIELD, f"{kind} {expression!r} must look like {example!r}")
    return parts[0], parts[1]


@dataclass(frozen=True)
class DayTimesRecurrence:
    """Fixed times on the days a predicate selects: daily, weekly and monthly schedules."""

    times: tuple[time, ...]
    weekdays: frozenset[int] | None = None  # ISO weekdays 1..7
    monthdays: frozenset[int] | None = None  # 1..31, 0 = last day of the month
    elapsed: bool = False

    def matches(self, day: date) -> bool:
        if self.weekdays is not None and day.isoweekday() not in self.weekdays:
            return False
        if self.monthdays is not None:
            last = calendar.monthrange(day.year, day.month)[1]
            if day.day not in self.monthdays and not (0 in self.monthdays and day.day == last):
                return False
        return True

    def iter_local(self, start: datetime) -> Iterator[datetime]:
        day = start.date()
        while True:
            if self.matches(day):
                for at in self.times:
                    candidate = datetime.combine(day, at)
                    if candidate >= start:
                        yield candidate
            if day == date.max:
                return
            day += timedelta(days=1)


def parse_daily(expression: str) -> DayTimesRecurrence:
    return DayTimesRecurrence(times=_parse_times(expression.strip()))


def parse_weekly(expression: str) -> DayTimesRecurrence:
    days, times = _split_days_and_times(expression, "weekly", "1-5 09:00")
    return DayTimesRecurrence(
        times=_parse_times(times),
        weekdays=_parse_numbers(days, 1, 7, "weekday", allow_last=False),
    )


def parse_monthly(expression: str) -> DayTimesRecurrence:
    days, times = _split_days_and_times(expression, "monthly", "1,15,L 09:00")
    return DayTimesRecurrence(
        times=_parse_times(times),
        monthdays=_parse_numbers(days, 1, 31, "day of month", allow_last=True),
    )


# ---------------------------------------------------------------------- cron

_CRON_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


@dataclass(frozen=True)
class CronRecurrence:
    """A cron expression iterated on naive wall-clock time (croniter never sees a zone)."""

    expression: str
    elapsed: bool
    # Vixie cron: day-of-month and day-of-week both restricted means either matches; a field
    # that starts with "*" (like */2) counts as unrestricted, and then both must match.
    day_or: bool = True

    def iter_local(self, start: datetime) -> Iterator[datetime]:
        # croniter yields matches strictly after its start; step back one second to include it.
        key = (self.expression, self.day_or)
        it = _borrow_croniter(key)
        if it is None:
            it = croniter(self.expression, start - timedelta(seconds=1), day_or=self.day_or)
        else:
            it.set_current(start - timedelta(seconds=1), force=True)
        try:
            while True:
                yield it.get_next(datetime)
        finally:
            _return_croniter(key, it)


# Building a croniter parses its expression: 90 of the 115 us a next fire time took, paid on
# every claimed occurrence of a cron schedule. Iterators are lent out instead, one per
# iteration in progress (so two interleaved iterations, or two threads, never share one),
# and set to each iteration's start; set_current resets all the state an iteration reads.
_IDLE_CRONITERS: dict[tuple[str, bool], list[croniter]] = {}
_MAX_IDLE_EXPRESSIONS = 4096


def _borrow_croniter(key: tuple[str, bool]) -> croniter | None:
    idle = _IDLE_CRONITERS.get(key)
    try:
        return idle.pop() if idle else None
    except IndexError:  # another thread took the last one meanwhile
        return None


def _return_croniter(key: tuple[str, bool], it: croniter) -> None:
    if len(_IDLE_CRONITERS) >= _MAX_IDLE_EXPRESSIONS and key not in _IDLE_CRONITERS:
        _IDLE_CRONITERS.clear()
    idle = _IDLE_CRONITERS.setdefault(key, [])
    if len(idle) < 8:
        idle.append(it)


# A range of one value ("2-2", "mon-mon", with or without a step): croniter 7 expands it to
# "*", so "0 9 * * 2-2" would fire every day. It means that one value.
_SINGLE_RANGE = re.compile(r"(?<![\w-])(\w+)-\1(?:/\d+)?(?![\w-])", re.IGNORECASE)


# croniter's random value, "R" or "R(low-high)" standing alone in a field (not the r of "fri"):
# not cron (no crontab or CronJob accepts it), and drawn anew by each croniter, so a schedule
# with one has no fixed fire times to preview, export or fire exactly once.
_RANDOM_FIELD = re.compile(r"(?<![a-z])r(?![a-z])", re.IGNORECASE)


def normalise_cron(expression: str) -> str:
    text = " ".join(expression.split())
    text = _CRON_ALIASES.get(text.lower(), text)
    return " ".join(_SINGLE_RANGE.sub(r"\1", field) for field in text.split(" "))


def parse_cron(expression: str) -> CronRecurrence:
    text = normalise_cron(expression)
    fields = text.split(" ")
    if len(fields) not in (5, 6):
        raise ValidationError(
            FIELD,
            f"cron {expression!r} must have 5 fields (minute hour day month weekday) "
            "or 6 with seconds last",
        )
    if _RANDOM_FIELD.search(text):
        raise ValidationError(
            FIELD,
            f"cron {expression!r}: random fields (R) are not supported; a schedule fires at "
            "fixed times (for a spread-out start, use schedule_jitter_seconds)",
        )
    try:  # expand is what croniter.is_valid runs: once is enough
        expanded = croniter.expand(text)[0]
    except Exception:  # croniter raises a zoo of types on odd input
        expanded = None
    if expanded is None:
        raise ValidationError(FIELD, f"cron {expression!r} is not a valid cron expression")
    hours = expanded[1]
    every_hour = hours == ["*"] or set(hours) == set(range(24))
    day_or = not (fields[2].startswith("*") or fields[4].startswith("*"))
    return CronRecurrence(expression=text, elapsed=every_hour, day_or=day_or)
