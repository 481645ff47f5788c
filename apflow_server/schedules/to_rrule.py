"""Schedules as RFC 5545 recurrences: the planner behind the iCalendar export. Pure.

`plan_occurrences` turns a task's schedule into how one VEVENT writes its instants (DTSTART
with an RRULE, patched with EXDATE/RDATE at DST transitions where needed, or a list of
RDATEs), such that expanding the event with an RFC 5545 library gives exactly the instants
the engine fires at. exports/ical.py explains, per schedule type, what is written.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from croniter import croniter

from apflow_server.core.types import CalendarRule, ScheduleType
from apflow_server.core.zones import get_zone
from apflow_server.schedules.expressions import (
    CronRecurrence,
    DayTimesRecurrence,
    IntervalRecurrence,
    OnceRecurrence,
    WallClockRecurrence,
)
from apflow_server.schedules.plan import ScheduledTask, Timetable, schedule_of
from apflow_server.schedules.schedule import Schedule
from apflow_server.schedules.timezones import resolve_local

DEFAULT_HORIZON = timedelta(days=366)
DEFAULT_MAX_OCCURRENCES = 1000
# How far ahead an RRULE is checked against the engine at DST transitions.
RRULE_CHECK_HORIZON = timedelta(days=3653)
# More patches than this and a plain list of RDATEs is the clearer calendar.
MAX_PATCHES = 64

_ISO_WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")  # ISO 1..7
_CRON_WEEKDAYS = ("SU", "MO", "TU", "WE", "TH", "FR", "SA", "SU")  # cron 0..7
_UNITS = (
    (86400, "DAILY"),
    (3600, "HOURLY"),
    (60, "MINUTELY"),
    (1, "SECONDLY"),
)
_SECOND = timedelta(seconds=1)


class PlannedTask(ScheduledTask, Protocol):
    """What the planner reads from a task: its schedule and its next run."""

    schedule_enabled: bool
    next_run_at: datetime | None


@dataclass(frozen=True)
class Occurrences:
    """How one event's instants are written.

    `method` is "single" (DTSTART alone), "rrule", "rrule+patches" (an RRULE with EXDATE/RDATE
    corrections at DST transitions) or "rdate" (DTSTART and a list of RDATEs).
    """

    method: str
    start: datetime  # DTSTART: aware, in the task's zone or in UTC
    rrule: dict[str, Any] | None = None
    rdates: tuple[datetime, ...] = ()  # UTC
    exdates: tuple[datetime, ...] = ()  # UTC
    reason: str = ""


# ---------------------------------------------------------------------- the recurrence


def plan_occurrences(
    task: PlannedTask,
    *,
    now: datetime,
    horizon: timedelta = DEFAULT_HORIZON,
    max_occurrences: int = DEFAULT_MAX_OCCURRENCES,
    check_horizon: timedelta = RRULE_CHECK_HORIZON,
) -> Occurrences | None:
    """How the task's occurrences from its next_run_at on are written, or None when it has
    none (no next run, runs used up, next run past the end bound)."""
    if task.schedule_type is None or task.next_run_at is None or not task.schedule_enabled:
        return None
    first = task.next_run_at.astimezone(UTC).replace(microsecond=0)
    remaining = None if task.max_runs is None else task.max_runs - task.run_count
    if remaining is not None and remaining <= 0:
        return None
    schedule = schedule_of(task)
    if schedule.end_at is not None and first > schedule.end_at:
        return None
    if schedule.type is ScheduleType.ONCE or remaining == 1:
        reason = "once" if schedule.type is ScheduleType.ONCE else "the last run"
        return Occurrences("single", _wall_clock_or_utc(first, schedule.zone), reason=reason)
    builder = _Planner(
        schedule=schedule,
        first=first,
        remaining=remaining,
        until=schedule.end_at,
        window_end=max(now, first) + horizon,
        check_end=max(now, first) + max(check_horizon, horizon),
        max_occurrences=max_occurrences,
    )
    return builder.plan()


@dataclass
class _Planner:
    schedule: Timetable
    first: datetime
    remaining: int | None
    until: datetime | None
    window_end: datetime
    check_end: datetime
    max_occurrences: int

    @property
    def zone(self) -> ZoneInfo:
        return self.schedule.zone

    def plan(self) -> Occurrences:
        if not isinstance(self.schedule, Schedule):  # under a business calendar
            return self._calendar_dates()
        recurrence = self.schedule.recurrence
        if isinstance(recurrence, IntervalRecurrence):
            return self._interval(recurrence.period)
        assert not isinstance(recurrence, OnceRecurrence)
        rule = _wall_clock_rule(recurrence)
        if rule is None:
            return self._rdates("no single RRULE expresses this schedule")
        transitions = _transitions(self.zone, self.first - timedelta(days=1), self.check_end)
        elapsed = recurrence.elapsed
        if elapsed and rule.days_unrestricted and transitions:
            utc_rule = _elapsed_utc_rule(rule, self.zone, self.first, transitions)
            if utc_rule is not None:
                return self._bounded(utc_rule, self.first, "elapsed time, in UTC")
        start = _nominal(recurrence, self.zone, self.first)
        if start is None:
            return self._rdates("the next run has no wall-clock reading")
        patches = _patches(
            self.schedule,
            recurrence,
            start,
            self.first,
            self.until,
            transitions,
            ordered=self.remaining is not None or self.until is not None,
        )
        dtstart = start.replace(tzinfo=self.zone)
        if patches is None:
            return self._rdates("the wall-clock rule and the engine differ at a DST change")
        exdates, rdates = patches
        if not exdates and not rdates:
            return self._bounded(rule.parts, dtstart, "wall-clock time")
        if self.remaining is not None or len(exdates) + len(rdates) > MAX_PATCHES:
            return self._rdates("DST patches needed with a run count, or too many")
        if not _exdates_safe(recurrence, self.zone, start, exdates):
            return self._rdates("an EXDATE could be mistaken for another occurrence")
        until = min(self.until, self.check_end) if self.until else self.check_end
        return Occurrences(
            "rrule+patches",
            dtstart,
            rrule={**rule.parts, "UNTIL": until},
            rdates=tuple(instant for instant in rdates if instant <= until),
            exdates=tuple(instant for instant in exdates if instant <= until),
            reason="wall-clock time, patched at DST changes",
        )

    # -------------------------------------------------------------- kinds

    def _interval(self, period: timedelta) -> Occurrences:
        seconds = int(period.total_seconds())
        frequency, interval = next(
            (name, seconds // unit) for unit, name in _UNITS if seconds % unit == 0
        )
        parts: dict[str, Any] = {"FREQ": frequency}
        if interval != 1:
            parts["INTERVAL"] = interval
        transitions = _transitions(self.zone, self.first - timedelta(days=1), self.check_end)
        if transitions:
            return self._bounded(parts, self.first, "elapsed time, in UTC")
        return self._bounded(parts, self.first.astimezone(self.zone), "fixed UTC offset")

    def _bounded(self, parts: dict[str, Any], start: datetime, reason: str) -> Occurrences:
        """The rule with COUNT or UNTIL, whichever ends the schedule first."""
        parts = dict(parts)
        if self.remaining is not None and self.until is not None:
            ending = self._which_ends()
            if ending is None:
                return self._rdates("both max_runs and schedule_end_at, far away")
            if ending == "count":
                parts["COUNT"] = self.remaining
            else:
                parts["UNTIL"] = self.until
        elif self.remaining is not None:
            parts["COUNT"] = self.remaining
        elif self.until is not None:
            parts["UNTIL"] = self.until
        return Occurrences("rrule", start, rrule=parts, reason=reason)

    def _which_ends(self) -> str | None:
        """ "count" when max_runs ends the schedule before schedule_end_at, else "until";
        None when that is further than max_occurrences runs away."""
        assert self.remaining is not None and self.until is not None
        recurrence = self.schedule.recurrence
        if isinstance(recurrence, IntervalRecurrence):
            last = self.first + (self.remaining - 1) * recurrence.period
            return "count" if last <= self.until else "until"
        count = 1
        for _ in self.schedule.occurrences(self.first):
            count += 1
            if count >= self.remaining:
                return "count"
            if count > self.max_occurrences:
                return None
        return "until"

    def _calendar_dates(self) -> Occurrences:
        """A schedule under a business calendar: no RRULE knows its closed days, so its
        instants are listed. Under `skip`, the occurrences on closed days are not events (they
        are recorded skipped): left out, or an EXDATE when the first one is closed."""
        from apflow_server.schedules.calendars import CalendarSchedule

        assert isinstance(self.schedule, CalendarSchedule)
        listed = self._rdates("a business calendar decides which days it fires on")
        if self.schedule.rule != CalendarRule.SKIP:
            return listed
        schedule = self.schedule
        open_days = tuple(i for i in listed.rdates if schedule.closed_reason(i) is None)
        first_closed = schedule.closed_reason(self.first) is not None
        return replace(
            listed,
            rdates=open_days,
            exdates=(self.first.astimezone(UTC),) if first_closed else (),
        )

    def _rdates(self, reason: str) -> Occurrences:
        """DTSTART and the engine's next occurrences within the horizon, as RDATEs."""
        limit = self.max_occurrences
        if self.remaining is not None:
            limit = min(limit, self.remaining)
        instants: list[datetime] = []
        for fire in self.schedule.occurrences(self.first):
            if len(instants) + 1 >= limit or fire > self.window_end:
                break
            instants.append(fire)
        return Occurrences(
            "rdate",
            _wall_clock_or_utc(self.first, self.zone),
            rdates=tuple(instants),
            reason=reason,
        )


def _wall_clock_or_utc(instant: datetime, zone: ZoneInfo) -> datetime:
    """The instant in the zone when its wall-clock time names it (RFC 5545), else in UTC."""
    local = instant.astimezone(zone)
    if resolve_local(local.replace(tzinfo=None), zone).first == instant:
        return local.replace(fold=0)
    return instant.astimezone(UTC)


def _nominal(recurrence: WallClockRecurrence, zone: ZoneInfo, instant: datetime) -> datetime | None:
    """The wall-clock time of the schedule that RFC 5545 reads as `instant` (naive), if any."""
    offsets = {
        _offset(zone, instant + delta)
        for delta in (timedelta(hours=-3), timedelta(0), timedelta(hours=3))
    }
    found = []
    for offset in offsets:
        local = (instant + offset).replace(tzinfo=None)
        if resolve_local(local, zone).first != instant:
            continue
        if next(iter(recurrence.iter_local(local)), None) == local:
            found.append(local)
    return min(found) if found else None


# ---------------------------------------------------------------------- wall-clock rules


@dataclass(frozen=True)
class _Rule:
    """An RRULE (without COUNT/UNTIL) whose wall-clock expansion is the recurrence's."""

    parts: dict[str, Any]
    days_unrestricted: bool = False
    minutes: tuple[int, ...] = ()  # for an every-hour cron: its minutes and seconds
    seconds: tuple[int, ...] = (0,)
    six_fields: bool = False


def _wall_clock_rule(recurrence: WallClockRecurrence) -> _Rule | None:
    if isinstance(recurrence, DayTimesRecurrence):
        return _day_times_rule(recurrence)
    if isinstance(recurrence, CronRecurrence):
        return _cron_rule(recurrence)
    return None


def _day_times_rule(recurrence: DayTimesRecurrence) -> _Rule | None:
    times = recurrence.times
    hours = sorted({at.hour for at in times})
    minutes = sorted({at.minute for at in times})
    grid = [(hour, minute) for hour in hours for minute in minutes]
    weekdays = (
        [_ISO_WEEKDAYS[day - 1] for day in sorted(recurrence.weekdays)]
        if recurrence.weekdays is not None
        else None
    )
    monthdays = _monthdays(recurrence.monthdays) if recurrence.monthdays is not None else None
    parts: dict[str, Any]
    if len(grid) == len(times):
        if weekdays is not None:
            parts = {"FREQ": "WEEKLY", "BYDAY": weekdays}
        elif monthdays is not None:
            parts = {"FREQ": "MONTHLY", "BYMONTHDAY": monthdays}
        else:
            parts = {"FREQ": "DAILY"}
        if len(times) > 1:
            parts.update(BYHOUR=hours, BYMINUTE=minutes)
        return _Rule(parts)
    # Not every combination of the hours and minutes: pick the listed ones of each day.
    if len(grid) > 366:
        return None
    parts = {"FREQ": "DAILY"}
    if weekdays is not None:
        parts["BYDAY"] = weekdays
    if monthdays is not None:
        parts["BYMONTHDAY"] = monthdays
    parts.update(
        BYHOUR=hours,
        BYMINUTE=minutes,
        BYSETPOS=[grid.index((at.hour, at.minute)) + 1 for at in times],
    )
    return _Rule(parts)


def _monthdays(days: Iterable[int | str]) -> list[int]:
    """Days of the month for BYMONTHDAY: the last day (0 or cron's `l`) is -1."""
    numbers = sorted({day for day in days if isinstance(day, int) and day > 0})
    if any(day == 0 or day == "l" for day in days):
        numbers.append(-1)
    return numbers


def _cron_rule(recurrence: CronRecurrence) -> _Rule | None:
    """The RRULE of a cron expression, or None when none expresses it exactly."""
    fields = recurrence.expression.split(" ")
    if len(fields) not in (5, 6) or "w" in fields[2].lower():
        return None  # W (nearest weekday) moves with the calendar: no RRULE part says that
    try:
        expanded, nth = croniter.expand(recurrence.expression)
    except Exception:  # croniter raises a zoo of types; the engine parsed it, so be careful
        return None
    six = len(fields) == 6
    minute, hour, dom, month, dow = (list(values) for values in expanded[:5])
    second = list(expanded[5]) if six else [0]
    if any(
        not all(isinstance(v, int) or v in ("*", "l") for v in values)
        for values in (minute, hour, dom, month, dow, second)
    ):
        return None

    dom_star, dow_star = dom[0] == "*", dow[0] == "*"
    monthdays: list[int] | None = None if dom_star else _monthdays(dom)
    byday: list[str] | None = None
    if not dow_star:
        if nth:
            # Every item must be `D#N` (croniter merges `1,1#2`, whose meaning is unclear).
            items = fields[4].split(",")
            if not all("#" in item for item in items) or set(nth) != set(dow):
                return None
            byday = [f"{n}{_CRON_WEEKDAYS[day]}" for day in sorted(nth) for n in sorted(nth[day])]
        else:
            byday = [_CRON_WEEKDAYS[day] for day in sorted(set(dow))]
            byday = list(dict.fromkeys(byday))
    if recurrence.day_or and monthdays is not None and byday is not None:
        # Vixie cron: either day field matches. Only "every day of the month" is one rule.
        if nth or set(range(1, 32)) - {d for d in dom if isinstance(d, int)}:
            return None
        monthdays, byday = None, None
    if nth and monthdays is not None:
        return None
    months = None if month[0] == "*" else sorted(month)

    hour_all = _full(hour, 24)
    minute_all = _full(minute, 60)
    second_all = six and _full(second, 60)
    if not hour_all and not minute_all and not second_all:
        unit = "DAY"
    elif not minute_all and not second_all:
        unit = "HOUR"
    elif not second_all:
        unit = "MINUTE"
    else:
        unit = "SECOND"
    if nth:
        unit = "DAY"  # BYDAY=2FR exists only in MONTHLY/YEARLY rules
    if unit == "DAY":
        frequency = "MONTHLY" if nth or monthdays else "WEEKLY" if byday else "DAILY"
    else:
        frequency = {"HOUR": "HOURLY", "MINUTE": "MINUTELY", "SECOND": "SECONDLY"}[unit]
    coarser = {"DAY": 3, "HOUR": 2, "MINUTE": 1, "SECOND": 0}[unit]

    parts: dict[str, Any] = {"FREQ": frequency}
    if months is not None:
        parts["BYMONTH"] = months
    if monthdays is not None:
        parts["BYMONTHDAY"] = monthdays
    if byday is not None:
        parts["BYDAY"] = byday
    hours, minutes, seconds = _values(hour, 24), _values(minute, 60), _values(second, 60)
    if coarser >= 3 or not hour_all:
        parts["BYHOUR"] = hours
    if coarser >= 2 or not minute_all:
        parts["BYMINUTE"] = minutes
    if six and (coarser >= 1 or not second_all):
        parts["BYSECOND"] = seconds
    return _Rule(
        parts,
        days_unrestricted=monthdays is None and byday is None and months is None,
        minutes=tuple(minutes),
        seconds=tuple(seconds),
        six_fields=six,
    )


def _full(values: list[Any], size: int) -> bool:
    return values[0] == "*" or set(values) == set(range(size))


def _values(values: list[Any], size: int) -> list[int]:
    return list(range(size)) if values[0] == "*" else sorted({int(v) for v in values})


def _elapsed_utc_rule(
    rule: _Rule, zone: ZoneInfo, first: datetime, transitions: tuple[_Transition, ...]
) -> dict[str, Any] | None:
    """An every-hour cron without day restrictions fires whenever the local clock shows one
    of its minutes (and seconds). When every offset the zone uses turns those into the same
    UTC minutes, that is one RRULE in UTC, exact through any transition."""
    offsets = {_offset(zone, first)} | {transition.after for transition in transitions}
    shifted: set[frozenset[int]] = set()
    for offset in offsets:
        total = int(offset.total_seconds())
        if total % 60:
            return None
        shifted.add(
            frozenset(
                (minute * 60 + second - total) % 3600
                for minute in rule.minutes
                for second in rule.seconds
            )
        )
    if len(shifted) != 1:
        return None
    in_hour = sorted(shifted.pop())
    minutes = sorted({value // 60 for value in in_hour})
    seconds = sorted({value % 60 for value in in_hour})
    if len(minutes) * len(seconds) != len(in_hour):
        return None
    parts: dict[str, Any]
    if len(minutes) == 60 and len(seconds) == 60:
        parts = {"FREQ": "SECONDLY"}
    elif len(minutes) == 60:
        parts = {"FREQ": "MINUTELY"}
    else:
        parts = {"FREQ": "HOURLY", "BYMINUTE": minutes}
    if len(seconds) < 60 and (rule.six_fields or seconds != [0]):
        parts["BYSECOND"] = seconds
    return parts


# ---------------------------------------------------------------------- DST transitions


@dataclass(frozen=True)
class _Transition:
    at: datetime  # UTC: the first instant with the new offset
    before: timedelta
    after: timedelta


def _offset(zone: ZoneInfo, instant: datetime) -> timedelta:
    offset = instant.astimezone(zone).utcoffset()
    assert offset is not None
    return offset


def _transitions(zone: ZoneInfo, low: datetime, high: datetime) -> tuple[_Transition, ...]:
    """The zone's offset changes in [low, high]."""
    years = range(max(low.year, 1), min(high.year, 9998) + 1)
    return tuple(
        transition
        for year in years
        for transition in _transitions_in_year(zone.key, year)
        if low <= transition.at <= high
    )


@functools.lru_cache(maxsize=4096)
def _transitions_in_year(zone_key: str, year: int) -> tuple[_Transition, ...]:
    zone = get_zone(zone_key)
    found: list[_Transition] = []
    step = timedelta(hours=12)
    current = datetime(year, 1, 1, tzinfo=UTC)
    end = datetime(year + 1, 1, 1, tzinfo=UTC)
    offset = _offset(zone, current - _SECOND)
    while current < end:
        following = _offset(zone, current)
        if following != offset:
            found.append(_Transition(_first_with(zone, current - step, current), offset, following))
            offset = following
        current += step
    return tuple(found)


def _first_with(zone: ZoneInfo, low: datetime, high: datetime) -> datetime:
    """The first second in (low, high] with the offset in force at `high`."""
    before = _offset(zone, low)
    lo, hi = math.floor(low.timestamp()), math.ceil(high.timestamp())
    while hi - lo > 1:
        middle = (lo + hi) // 2
        if _offset(zone, datetime.fromtimestamp(middle, UTC)) == before:
            lo = middle
        else:
            hi = middle
    return datetime.fromtimestamp(hi, UTC)


def _patches(
    schedule: Schedule,
    recurrence: WallClockRecurrence,
    start: datetime,
    first: datetime,
    until: datetime | None,
    transitions: tuple[_Transition, ...],
    *,
    ordered: bool,
) -> tuple[list[datetime], list[datetime]] | None:
    """Where the wall-clock RRULE from `start` and the engine from `first` differ.

    Away from a transition both read each wall-clock time with the one offset in force. Near
    one, the RRULE reads gap times with the offset before the gap and repeated times at their
    first pass (RFC 5545), as the engine does for wall-clock schedules; the engine runs
    every-hour crons on elapsed time instead, and two readings can land on one instant.
    So the instants around each transition are compared: RRULE readings the engine does not
    fire become EXDATEs, engine instants the RRULE misses RDATEs (both in UTC).
    None when no patch can fix it: one instant read twice (an EXDATE removes both), or an
    order that COUNT or UNTIL (`ordered`) would cut differently.
    """
    exdates: list[datetime] = []
    rdates: list[datetime] = []
    for transition in transitions:
        shift = abs(transition.after - transition.before)
        at = transition.at.replace(tzinfo=None)
        low_offset = min(transition.before, transition.after)
        high_offset = max(transition.before, transition.after)
        # Wall-clock times whose reading the transition affects: the gap or the repeated
        # stretch, and after a gap the times whose instants interleave with the gap's.
        affected_low, affected_high = at + low_offset, at + high_offset + shift
        if transition.at + shift <= first:
            continue
        candidate = next(iter(recurrence.iter_local(affected_low)), None)
        if candidate is None or candidate >= affected_high:
            continue
        # Every reading in [at - shift, at + shift) comes from these wall-clock times.
        window_low, window_high = transition.at - shift, transition.at + shift
        model: list[tuple[datetime, datetime]] = []
        for local in recurrence.iter_local(max(at + low_offset - shift, start)):
            if local >= at + high_offset + shift:
                break
            instant = resolve_local(local, schedule.zone).first
            if window_low <= instant < window_high and (until is None or instant <= until):
                model.append((local, instant))
        engine = _engine_between(schedule, max(window_low, first), window_high)
        readings = [instant for _, instant in model]
        if ordered and readings != sorted(readings):
            return None
        counts = Counter(readings)
        fired = set(engine)
        if any(count > 1 and instant in fired for instant, count in counts.items()):
            return None
        exdates.extend(instant for instant in sorted(counts) if instant not in fired)
        rdates.extend(instant for instant in engine if instant not in counts)
        if len(exdates) + len(rdates) > MAX_PATCHES:
            return None
    return exdates, rdates


def _exdates_safe(
    recurrence: WallClockRecurrence, zone: ZoneInfo, start: datetime, exdates: list[datetime]
) -> bool:
    """Whether no EXDATE could remove an occurrence it does not mean.

    An EXDATE is written in UTC. Some readers (recurring-ical-events among them) also match an
    EXDATE's wall-clock digits against each occurrence's *local* wall-clock digits, so an
    EXDATE at 15:30Z would also remove a 15:30 local occurrence: refuse that case.
    """
    excluded = set(exdates)
    for instant in exdates:
        digits = instant.replace(tzinfo=None)
        if digits < start:
            continue
        if next(iter(recurrence.iter_local(digits)), None) != digits:
            continue
        if resolve_local(digits, zone).first not in excluded:
            return False
    return True


def _engine_between(schedule: Schedule, low: datetime, high: datetime) -> list[datetime]:
    """The engine's fire times in [low, high)."""
    found: list[datetime] = []
    current = schedule.next_after(low - timedelta(microseconds=1))
    while current is not None and current < high:
        found.append(current)
        current = schedule.next_after(current)
    return found
