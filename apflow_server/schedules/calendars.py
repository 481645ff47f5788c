"""Business calendars: the days a schedule may fire on. Pure time math, no I/O.

A calendar is closed on its weekend days, on the public holidays of a country (and optionally
a subdivision) from the `holidays` package, on dates listed explicitly and on the all-day
events of an imported iCalendar file. Every other day is a business day.

A schedule runs under a calendar with a rule for its occurrences on closed days (judged on the
occurrence's local date in the schedule's zone): skip them, or move each to the same local
wall-clock time on the next or the previous business day. `BD<n>` / `BDL` expressions fire on
the n-th / last business day of each month.
"""

from __future__ import annotations

import bisect
import calendar as gregorian
import hashlib
import json
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import holidays
import icalendar
from croniter import CroniterBadDateError

from apflow_server.core.errors import ValidationError
from apflow_server.core.types import CalendarRule, ScheduleType
from apflow_server.schedules.expressions import (
    FIELD,
    IntervalRecurrence,
    OnceRecurrence,
    _parse_times,
)
from apflow_server.schedules.schedule import (
    Recurrence,
    Schedule,
    fires_of,
    occurrences_from,
    preview_from,
)
from apflow_server.schedules.timezones import (
    ensure_utc,
    get_zone,
    resolve_local,
    to_local_naive,
)

# The longest run of closed days a calendar may have. Every search for a business day looks
# this far and no further, so a calendar that never opens fails loudly instead of looping.
MAX_CLOSED_RUN = 366
MAX_DATES = 10_000
MAX_ICS_BYTES = 1_000_000
MAX_REASON_LENGTH = 200
DEFAULT_WEEKEND = frozenset({6, 7})
CALENDAR_FIELD = "calendar"
DEFAULT_REASON = "closed"

_DAY = timedelta(days=1)
_TINY = timedelta(microseconds=1)
# A valid schedule that has not fired for this long never will (the engine's horizon too).
_HORIZON_DAYS = 366 * 30
# Where build_calendar looks for long closures besides around the listed dates.
_CHECK_ORIGIN = date(2000, 1, 1)
_CHECK_SPAN_DAYS = 731
# Listed dates further apart than this leave the weekend and holidays alone in between, and
# those never close a month: a run too long to allow lies within a cluster of listed dates.
_CLUSTER_MARGIN_DAYS = 31
# The names of holidays are English where the package has them, whatever the server's locale.
_PREFERRED_LANGUAGE = "en_US"


# ---------------------------------------------------------------------- the calendar


class BusinessCalendar:
    """Closed days: weekend, public holidays, explicit dates and imported all-day events.

    Build it with `build_calendar`, which validates its input; the constructor trusts it.
    Holidays are computed by the `holidays` package a year at a time, on first lookup (it
    knows years 1901 to 2100 for most countries; outside them only the other sources close).
    """

    def __init__(
        self,
        *,
        weekend: Iterable[int] = DEFAULT_WEEKEND,
        country: str | None = None,
        subdivision: str | None = None,
        categories: Iterable[str] | None = None,
        closed: Mapping[date, str] | None = None,
        imported: Mapping[date, str] | None = None,
    ) -> None:
        self._weekend = frozenset(weekend)
        self._country = country
        self._subdivision = subdivision
        self._categories = tuple(sorted(set(categories))) if categories is not None else None
        self._closed = dict(closed or {})
        self._imported = dict(imported or {})
        self._table: holidays.HolidayBase | None = None
        self._lock = threading.Lock()  # the package fills in a year on first lookup
        self._months: dict[tuple[int, int], tuple[date, ...]] = {}
        definition = {
            "weekend": sorted(self._weekend),
            "country": country,
            "subdivision": subdivision,
            "categories": list(self._categories) if self._categories is not None else None,
            "dates": sorted((d.isoformat(), r) for d, r in self._closed.items()),
            "ics": sorted((d.isoformat(), r) for d, r in self._imported.items()),
        }
        text = json.dumps(definition, sort_keys=True, separators=(",", ":"))
        self._fingerprint = hashlib.sha256(text.encode()).hexdigest()

    # ------------------------------------------------------------------ definition

    @property
    def weekend(self) -> frozenset[int]:
        return self._weekend

    @property
    def country(self) -> str | None:
        return self._country

    @property
    def subdivision(self) -> str | None:
        return self._subdivision

    @property
    def categories(self) -> tuple[str, ...] | None:
        return self._categories

    @property
    def closed_dates(self) -> Mapping[date, str]:
        return dict(self._closed)

    @property
    def imported_dates(self) -> Mapping[date, str]:
        return dict(self._imported)

    def fingerprint(self) -> str:
        """A hash of the definition (not of the `holidays` package's data version)."""
        return self._fingerprint

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BusinessCalendar):
            return NotImplemented
        return self._fingerprint == other._fingerprint

    def __hash__(self) -> int:
        return hash(self._fingerprint)

    def __repr__(self) -> str:
        return (
            f"BusinessCalendar(weekend={sorted(self._weekend)}, country={self._country!r}, "
            f"subdivision={self._subdivision!r}, dates={len(self._closed)}, "
            f"ics={len(self._imported)})"
        )

    # ------------------------------------------------------------------ days

    def holiday_name(self, day: date) -> str | None:
        if self._country is None:
            return None
        with self._lock:
            if self._table is None:
                self._table = _holiday_table(self._country, self._subdivision, self._categories)
            name = self._table.get(day)
        return str(name) if name else None

    def closed_reason(self, day: date) -> str | None:
        """Why `day` is closed, or None on a business day.

        An explicit date wins (the calendar's owner said so, and may relabel a holiday), then a
        public holiday's official name, then an imported event's summary (often a copy of the
        holiday under a vaguer name), then "weekend", the least informative.
        """
        reason = self._closed.get(day)
        if reason is not None:
            return reason
        name = self.holiday_name(day)
        if name is not None:
            return name
        reason = self._imported.get(day)
        if reason is not None:
            return reason
        return "weekend" if day.isoweekday() in self._weekend else None

    def is_business_day(self, day: date) -> bool:
        # The cheap sources first: the holiday table is looked up only for a working weekday.
        if day in self._closed or day in self._imported or day.isoweekday() in self._weekend:
            return False
        return self.holiday_name(day) is None

    def next_business_day(self, day: date, *, include: bool, field: str = CALENDAR_FIELD) -> date:
        """The first business day after `day` (or on it, if `include`).

        Raises ValidationError naming `field` when none lies within MAX_CLOSED_RUN + 1 days,
        and OverflowError past the year 9999."""
        current = day if include else day + _DAY
        for _ in range(MAX_CLOSED_RUN + 1):
            if self.is_business_day(current):
                return current
            current += _DAY
        raise _never_opens(field, day)

    def previous_business_day(
        self, day: date, *, include: bool, field: str = CALENDAR_FIELD
    ) -> date:
        """The last business day before `day` (or `day` itself, if `include`); see
        `next_business_day` for the errors."""
        current = day if include else day - _DAY
        for _ in range(MAX_CLOSED_RUN + 1):
            if self.is_business_day(current):
                return current
            current -= _DAY
        raise _never_opens(field, day)

    def business_days_in_month(self, year: int, month: int) -> tuple[date, ...]:
        key = (year, month)
        found = self._months.get(key)
        if found is None:
            length = gregorian.monthrange(year, month)[1]
            found = tuple(
                day
                for day in (date(year, month, d) for d in range(1, length + 1))
                if self.is_business_day(day)
            )
            if len(self._months) >= 2400:  # two centuries of months
                self._months.clear()
            self._months[key] = found
        return found

    def business_day_of_month(self, year: int, month: int, n: int) -> date | None:
        """The n-th (from 1) business day of the month; None when the month has fewer."""
        if n < 1:
            raise ValueError("n counts from 1")
        found = self.business_days_in_month(year, month)
        return found[n - 1] if n <= len(found) else None

    def last_business_day(self, year: int, month: int) -> date | None:
        found = self.business_days_in_month(year, month)
        return found[-1] if found else None

    def days(self, start: date, end: date) -> list[tuple[date, str | None]]:
        """Every day in [start, end) with its closed reason, None for a business day."""
        result: list[tuple[date, str | None]] = []
        day = start
        while day < end:
            result.append((day, self.closed_reason(day)))
            day += _DAY
        return result

    def _first_long_closure(self, start: date, end: date) -> date | None:
        """The first day of a run of more than MAX_CLOSED_RUN closed days that starts in
        [start, end), else None."""
        run_start: date | None = None
        length = 0
        day = start
        while True:
            if self.is_business_day(day):
                if day >= end:
                    return None
                run_start, length = None, 0
            else:
                if run_start is None:
                    if day >= end:
                        return None
                    run_start = day
                length += 1
                if length > MAX_CLOSED_RUN:
                    return run_start
            day += _DAY


def _never_opens(field: str, day: date) -> ValidationError:
    return ValidationError(
        field,
        f"never opens: no business day within {MAX_CLOSED_RUN + 1} days of {day.isoformat()}",
    )


def _holiday_table(
    country: str, subdivision: str | None, categories: tuple[str, ...] | None
) -> holidays.HolidayBase:
    probe = holidays.country_holidays(country, subdiv=subdivision, categories=categories)
    languages = tuple(probe.supported_languages)
    language = (
        _PREFERRED_LANGUAGE
        if _PREFERRED_LANGUAGE in languages
        else next((lang for lang in languages if lang.startswith("en")), probe.default_language)
    )
    return holidays.country_holidays(
        country, subdiv=subdivision, categories=categories, language=language
    )


# ---------------------------------------------------------------------- validation


def build_calendar(
    *,
    weekend: object = None,
    country: object = None,
    subdivision: object = None,
    categories: object = None,
    dates: object = None,
    ics: object = None,
    reference: date | None = None,
) -> BusinessCalendar:
    """A validated calendar; every bad input raises ValidationError naming its field.

    `weekend`: ISO weekdays (1 = Monday .. 7 = Sunday), default Saturday and Sunday.
    `country` / `subdivision` / `categories`: public holidays from the `holidays` package (an
    ISO code like "DE", a subdivision like "BY", categories like ["public", "catholic"];
    the package's default is its "public" category).
    `dates`: "YYYY-MM-DD" strings or {"date": ..., "reason": ...}, at most MAX_DATES.
    `ics`: iCalendar text whose all-day events close their days (at most MAX_ICS_BYTES).
    A calendar closed for more than MAX_CLOSED_RUN days in a row (within two years of
    2000-01-01 or of `reference`, or anywhere among the listed dates) is refused.
    """
    built = BusinessCalendar(
        weekend=_weekend(weekend),
        **_holiday_source(country, subdivision, categories),
        closed=_explicit_dates(dates),
        imported=_ics_dates(ics),
    )
    _check_opens(built, reference)
    return built


def _weekend(value: object) -> frozenset[int]:
    if value is None:
        return DEFAULT_WEEKEND
    if not isinstance(value, list | tuple | set | frozenset):
        raise ValidationError("weekend", "must be a list of ISO weekdays, 1 = Monday .. 7 = Sunday")
    days: set[int] = set()
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int) or not 1 <= item <= 7:
            raise ValidationError(
                "weekend", f"{item!r} is not an ISO weekday (1 = Monday .. 7 = Sunday)"
            )
        days.add(item)
    if len(days) == 7:
        raise ValidationError("weekend", "cannot be all seven days: the calendar would never open")
    return frozenset(days)


_COUNTRY_RE = re.compile(r"^[A-Z]{2,3}$")


def _holiday_source(country: object, subdivision: object, categories: object) -> dict[str, Any]:
    if country is None:
        if subdivision is not None:
            raise ValidationError("holidays.subdivision", "needs holidays.country")
        if categories is not None:
            raise ValidationError("holidays.categories", "needs holidays.country")
        return {}
    if not isinstance(country, str) or not _COUNTRY_RE.match(country.strip().upper()):
        raise ValidationError("holidays.country", "must be an ISO 3166 country code such as 'DE'")
    code = country.strip().upper()
    try:
        probe = holidays.country_holidays(code)
    except NotImplementedError:
        probe = None
    canonical = getattr(probe, "country", None)
    if probe is None or not isinstance(canonical, str):
        raise ValidationError("holidays.country", f"no public holidays are known for {country!r}")
    chosen = _categories(probe, categories)
    subdiv = _subdivision(probe, subdivision)
    try:  # a subdivision may not know every category of its country
        _holiday_table(canonical, subdiv, chosen)
    except (NotImplementedError, ValueError) as exc:
        raise ValidationError("holidays.categories", str(exc)) from None
    return {"country": canonical, "subdivision": subdiv, "categories": chosen}


def _subdivision(probe: holidays.HolidayBase, value: object) -> str | None:
    if value is None:
        return None
    known = tuple(probe.subdivisions)
    if not isinstance(value, str) or not value.strip():
        raise ValidationError("holidays.subdivision", "must be a subdivision code such as 'BY'")
    text = value.strip()
    if text in known:
        return text
    aliases: Mapping[str, str] = getattr(probe, "subdivisions_aliases", {}) or {}
    folded = {code.casefold(): code for code in known}
    folded.update({alias.casefold(): code for alias, code in aliases.items()})
    found = folded.get(text.casefold())
    if found is None:
        listed = ", ".join(known) if known else "none"
        raise ValidationError(
            "holidays.subdivision",
            f"{value!r} is not a subdivision of {probe.country} (known: {listed})",
        )
    return found


def _categories(probe: holidays.HolidayBase, value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    supported = tuple(probe.supported_categories)
    if not isinstance(value, list | tuple) or not value:
        raise ValidationError(
            "holidays.categories", f"must be a non-empty list from {', '.join(supported)}"
        )
    chosen: set[str] = set()
    for item in value:
        name = item.strip().lower() if isinstance(item, str) else None
        if name not in supported:
            raise ValidationError(
                "holidays.categories",
                f"{item!r} is not a holiday category of {probe.country} "
                f"(known: {', '.join(supported)})",
            )
        chosen.add(name)
    return tuple(sorted(chosen))


_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$", re.ASCII)


def _explicit_dates(value: object) -> dict[date, str]:
    if value is None:
        return {}
    if not isinstance(value, list | tuple):
        raise ValidationError("dates", 'must be a list of "YYYY-MM-DD" dates')
    if len(value) > MAX_DATES:
        raise ValidationError("dates", f"at most {MAX_DATES} dates")
    result: dict[date, str] = {}
    for index, item in enumerate(value):
        reason = DEFAULT_REASON
        raw: object = item
        if isinstance(item, Mapping):
            extra = set(item) - {"date", "reason"}
            if extra:
                raise ValidationError(
                    "dates", f"item {index}: unknown key {sorted(map(str, extra))[0]!r}"
                )
            raw = item.get("date")
            if item.get("reason") is not None:
                reason = _reason(item["reason"], "dates", f"item {index}")
        day = _read_date(raw, index)
        previous = result.get(day)
        if previous is not None and previous != reason:
            raise ValidationError(
                "dates", f"{day.isoformat()} is listed twice ({previous!r} and {reason!r})"
            )
        result[day] = reason
    return result


def _read_date(raw: object, index: int) -> date:
    if isinstance(raw, date) and not isinstance(raw, datetime):
        return raw
    if isinstance(raw, str) and _DATE_RE.match(raw.strip()):
        try:
            return date.fromisoformat(raw.strip())
        except ValueError:
            pass
    raise ValidationError("dates", f'item {index}: {raw!r} is not a "YYYY-MM-DD" date')


def _reason(value: object, field: str, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(field, f"{where}: the reason must be a non-empty string")
    text = " ".join(value.split())
    if len(text) > MAX_REASON_LENGTH:
        raise ValidationError(
            field, f"{where}: the reason must be at most {MAX_REASON_LENGTH} characters"
        )
    return text


def _ics_dates(value: object) -> dict[date, str]:
    """The days of the all-day events of iCalendar text (DTEND is exclusive).

    Timed events are ignored: they do not close a whole day. Recurring events are refused
    rather than expanded, since an unbounded rule names infinitely many days."""
    if value is None:
        return {}
    if not isinstance(value, str):
        raise ValidationError("ics", "must be iCalendar text")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_ICS_BYTES:
        raise ValidationError("ics", f"must be at most {MAX_ICS_BYTES} bytes")
    try:
        parsed = icalendar.Calendar.from_ical(value)
    except Exception as exc:  # the parser raises several types on bad input
        raise ValidationError("ics", f"is not readable iCalendar text: {exc}") from None
    if getattr(parsed, "name", None) != "VCALENDAR":
        raise ValidationError("ics", "must be a VCALENDAR")
    reasons: dict[date, list[str]] = {}
    total = 0
    for index, event in enumerate(parsed.walk("VEVENT")):
        where = f"event {index + 1}"
        if str(event.get("STATUS", "")).upper() == "CANCELLED":
            continue
        if "RRULE" in event or "RDATE" in event:
            raise ValidationError(
                "ics", f"{where}: recurring events are not supported; list each occurrence"
            )
        start = _ics_value(event, "DTSTART", where)
        if start is None:
            raise ValidationError("ics", f"{where} has no DTSTART")
        if isinstance(start, datetime):
            continue
        if not isinstance(start, date):
            raise ValidationError("ics", f"{where} has an unreadable DTSTART")
        end = _ics_end(event, start, where)
        reason = _joined([" ".join(str(event.get("SUMMARY", "")).split()) or DEFAULT_REASON])
        day = start
        while day < end:
            total += 1
            if total > MAX_DATES:
                raise ValidationError("ics", f"the all-day events span more than {MAX_DATES} days")
            known = reasons.setdefault(day, [])
            if reason not in known:
                known.append(reason)
            day += _DAY
    return {day: _joined(names) for day, names in reasons.items()}


def _joined(names: list[str]) -> str:
    text = "; ".join(names)
    return text if len(text) <= MAX_REASON_LENGTH else text[: MAX_REASON_LENGTH - 1] + "…"


def _ics_value(event: Any, name: str, where: str) -> object:
    if name not in event:
        return None
    try:
        return event.decoded(name)
    except Exception:  # a value the parser kept as text and cannot decode
        raise ValidationError("ics", f"{where} has an unreadable {name}") from None


def _ics_end(event: Any, start: date, where: str) -> date:
    end = _ics_value(event, "DTEND", where)
    if end is not None:
        if isinstance(end, datetime) or not isinstance(end, date):
            raise ValidationError("ics", f"{where}: an all-day event's DTEND must be a date")
        if end < start:
            raise ValidationError("ics", f"{where} ends before it starts")
        return max(end, start + _DAY)  # DTEND = DTSTART (seen in the wild) means that one day
    duration = _ics_value(event, "DURATION", where)
    if duration is None:
        return start + _DAY
    if not isinstance(duration, timedelta) or duration <= timedelta(0) or duration % _DAY:
        raise ValidationError(
            "ics", f"{where}: an all-day event's DURATION must be whole days (P1D)"
        )
    try:
        return start + duration
    except OverflowError:
        raise ValidationError("ics", f"{where} ends after the year 9999") from None


def _check_opens(built: BusinessCalendar, reference: date | None) -> None:
    windows: list[tuple[date, date]] = []
    for origin in (_CHECK_ORIGIN, reference):
        if origin is not None:
            first = origin.date() if isinstance(origin, datetime) else origin
            windows.append((first, _add_days(first, _CHECK_SPAN_DAYS)))
    listed = sorted(set(built.closed_dates) | set(built.imported_dates))
    margin = _CLUSTER_MARGIN_DAYS
    cluster: list[date] = []
    for day in [*listed, None]:
        if cluster and (day is None or (day - cluster[-1]).days > 2 * margin):
            low, high = _add_days(cluster[0], -margin), _add_days(cluster[-1], margin)
            if (high - low).days > MAX_CLOSED_RUN:
                windows.append((low, high))
            cluster = []
        if day is not None:
            cluster.append(day)
    for low, high in windows:
        try:
            found = built._first_long_closure(low, high)
        except OverflowError:  # the end of the calendar: nothing follows to stay closed for
            found = None
        if found is not None:
            raise _never_opens(CALENDAR_FIELD, found)


def _add_days(day: date, days: int) -> date:
    try:
        return day + timedelta(days=days)
    except OverflowError:
        return date.max if days > 0 else date.min


# ---------------------------------------------------------------------- rules on a schedule


def parse_calendar_rule(value: object, field: str = "calendar_rule") -> CalendarRule:
    try:
        return CalendarRule(str(value).strip().lower())
    except ValueError:
        names = ", ".join(rule.value for rule in CalendarRule)
        raise ValidationError(field, f"must be one of {names}") from None


class CalendarSchedule:
    """A schedule under a business calendar, with the interface of `Schedule`.

    SKIP keeps the schedule's occurrences as they are; `closed_reason` tells which fall on
    closed days, for the scheduler to record as skipped.

    NEXT / PREVIOUS move each occurrence on a closed local day to the same local wall-clock
    time on the next / previous business day, read in the zone by RFC 5545 rules (a time in a
    gap moves forward by the gap, a repeated time means its first occurrence). Occurrences
    that land on one instant fire once; the result is strictly increasing. The moved time is
    the expression's own wall-clock time (02:30 stays 02:30 even when the closed day had a
    gap there). A closed day is the local date the expression names (an interval's: the
    occurrence's local date); the two differ only where a DST gap crosses local midnight.
    The schedule's start and end bounds apply to the fire instants, after moving:
    Saturday's occurrence before the start can fire on Monday after it, and one moved past
    the end does not fire.
    """

    def __init__(
        self, schedule: Schedule, calendar: BusinessCalendar, rule: CalendarRule | str
    ) -> None:
        self.schedule = schedule
        self.calendar = calendar
        self.rule = CalendarRule(rule)
        if schedule.type is ScheduleType.INTERVAL:
            anchor = schedule.start_at or schedule.anchor_at
            unbounded = replace(schedule, start_at=None, end_at=None, anchor_at=anchor)
        else:
            unbounded = replace(schedule, start_at=None, end_at=None)
        self._unbounded = unbounded
        self._fires_cache: dict[date, tuple[datetime, ...]] = {}
        # The first day with an occurrence, from a day on: the same for every task of a shape
        # (a cron whose occurrence today has passed built a croniter per call: ~350 us).
        self._sources_cache: dict[date, date | None] = {}

    # ------------------------------------------------------------------ Schedule's interface

    @property
    def type(self) -> ScheduleType:
        return self.schedule.type

    @property
    def expression(self) -> str:
        return self.schedule.expression

    @property
    def timezone(self) -> str:
        return self.schedule.timezone

    @property
    def zone(self) -> ZoneInfo:
        return self.schedule.zone

    @property
    def recurrence(self) -> Recurrence:
        return self.schedule.recurrence

    @property
    def start_at(self) -> datetime | None:
        return self.schedule.start_at

    @property
    def end_at(self) -> datetime | None:
        return self.schedule.end_at

    @property
    def anchor_at(self) -> datetime | None:
        return self.schedule.anchor_at

    def __repr__(self) -> str:
        return f"CalendarSchedule({self.schedule!r}, {self.calendar!r}, {self.rule.value!r})"

    def closed_reason(self, occurrence: datetime) -> str | None:
        """Why an occurrence falls on a closed day (its local date in the schedule's zone)."""
        local = to_local_naive(ensure_utc(occurrence, "occurrence"), self.schedule.zone)
        return self.calendar.closed_reason(local.date())

    def once_instant(self) -> datetime:
        """The instant a `once` schedule fires at, after its rule."""
        base = self.schedule.once_instant()
        if self.rule is CalendarRule.SKIP:
            return base
        nominal = self._once_local()
        if self.calendar.is_business_day(nominal.date()):
            return base
        day = self._target(nominal.date())
        return resolve_local(datetime.combine(day, nominal.time()), self.schedule.zone).first

    def next_after(self, instant: datetime) -> datetime | None:
        """The first fire time strictly after `instant`, within the bounds; None when over."""
        instant = ensure_utc(instant, "after")
        if self.rule is CalendarRule.SKIP:
            return self.schedule.next_after(instant)
        try:
            return self._moved_after(instant)
        except (OverflowError, CroniterBadDateError):
            return None

    def occurrences(self, after: datetime) -> Iterator[datetime]:
        return occurrences_from(self.next_after, after)

    def preview(
        self,
        count: int,
        after: datetime,
        remaining_runs: int | None = None,
        *,
        between_steps: Callable[[], None] | None = None,
    ) -> list[datetime]:
        return preview_from(self.next_after, count, after, remaining_runs, between_steps)

    def first_fire(self, now: datetime) -> datetime | None:
        if self.schedule.type is not ScheduleType.ONCE:
            return self.next_after(now)
        if self.rule is CalendarRule.SKIP:
            return self.schedule.first_fire(now)
        try:
            when = self.once_instant()
        except OverflowError:
            return None
        start, end = self.schedule.start_at, self.schedule.end_at
        outside = (end is not None and when > end) or (start is not None and when < start)
        return None if outside else when

    # ------------------------------------------------------------------ moving

    def _target(self, day: date) -> date:
        """The business day an occurrence on `day` fires on."""
        if self.rule is CalendarRule.NEXT:
            return self.calendar.next_business_day(day, include=True)
        return self.calendar.previous_business_day(day, include=True)

    def _moved_after(self, instant: datetime) -> datetime | None:
        """Walk the business days from the one before `instant`'s local date; each fires at
        its own occurrences and those moved onto it, all within its local day."""
        start, end = self.schedule.start_at, self.schedule.end_at
        inclusive = start is not None and instant < start
        lower = start if inclusive and start is not None else instant
        first_day = to_local_naive(lower, self.schedule.zone).date() - _DAY
        horizon = first_day + timedelta(days=_HORIZON_DAYS)
        day = self.calendar.next_business_day(first_day, include=True)
        while day <= horizon:
            fires = self._fires_on(day)
            index = (bisect.bisect_left if inclusive else bisect.bisect_right)(fires, lower)
            if index < len(fires):
                found = fires[index]
                return None if end is not None and found > end else found
            if end is not None and datetime.combine(day, time.min, UTC) > end + 2 * _DAY:
                return None
            after = self.calendar.next_business_day(day, include=False)
            # Jump over days the schedule does not touch (a yearly schedule is not walked
            # business day by business day).
            source = self._first_source_day(day + _DAY if self.rule is CalendarRule.NEXT else after)
            if source is None:
                return None
            day = max(after, self._target(source))
        return None

    def _fires_on(self, day: date) -> tuple[datetime, ...]:
        """The fire instants of business day `day`: its own occurrences and those of the
        closed days before (NEXT) or after it (PREVIOUS) moved onto it, distinct, ascending."""
        cached = self._fires_cache.get(day)
        if cached is not None:
            return cached
        if self.rule is CalendarRule.NEXT:
            first = _after_or_min(self.calendar.previous_business_day(day, include=False))
            last = day
        else:
            first = day
            last = self.calendar.next_business_day(day, include=False) - _DAY
        zone = self.schedule.zone
        fires: set[datetime] = set()
        source = first
        while source <= last:
            for fire, at in self._occurrences_on(source):
                fires.add(
                    fire if source == day else resolve_local(datetime.combine(day, at), zone).first
                )
            if source == date.max:
                break
            source += _DAY
        result = tuple(sorted(fires))
        if len(self._fires_cache) >= 512:
            self._fires_cache.clear()
        self._fires_cache[day] = result
        return result

    def _occurrences_on(self, day: date) -> list[tuple[datetime, time]]:
        """The base schedule's fire instants on local `day`, with their wall-clock time: the
        expression's own (a gap time keeps it), or the instant's local time for intervals."""
        recurrence = self.schedule.recurrence
        zone = self.schedule.zone
        if isinstance(recurrence, OnceRecurrence):
            nominal = self._once_local()
            if nominal.date() != day:
                return []
            return [(self.schedule.once_instant(), nominal.time())]
        if isinstance(recurrence, IntervalRecurrence):
            result: list[tuple[datetime, time]] = []
            current = self._unbounded.next_after(self._day_start(day) - _TINY)
            while current is not None:
                local = to_local_naive(current, zone)
                if local.date() > day:
                    break
                if local.date() == day:
                    result.append((current, local.time()))
                current = self._unbounded.next_after(current)
            return result
        found: list[tuple[datetime, time]] = []
        for local in recurrence.iter_local(datetime.combine(day, time.min)):
            if local.date() != day:
                break
            found.extend((fire, local.time()) for fire in fires_of(local, zone, recurrence.elapsed))
        return found

    def _first_source_day(self, day: date) -> date | None:
        """The first local day from `day` on with an occurrence of the base schedule."""
        if day in self._sources_cache:
            return self._sources_cache[day]
        found = self._find_source_day(day)
        if len(self._sources_cache) >= 512:
            self._sources_cache.clear()
        self._sources_cache[day] = found
        return found

    def _find_source_day(self, day: date) -> date | None:
        recurrence = self.schedule.recurrence
        if isinstance(recurrence, OnceRecurrence):
            nominal = self._once_local().date()
            return nominal if nominal >= day else None
        if isinstance(recurrence, IntervalRecurrence):
            current = self._unbounded.next_after(self._day_start(day) - _TINY)
            while current is not None:
                local = to_local_naive(current, self.schedule.zone).date()
                if local >= day:
                    return local
                current = self._unbounded.next_after(current)
            return None
        candidate = next(iter(recurrence.iter_local(datetime.combine(day, time.min))), None)
        return None if candidate is None else candidate.date()

    def _day_start(self, day: date) -> datetime:
        return resolve_local(datetime.combine(day, time.min), self.schedule.zone).first

    def _once_local(self) -> datetime:
        recurrence = self.schedule.recurrence
        assert isinstance(recurrence, OnceRecurrence)
        when = recurrence.when
        if when.tzinfo is None:
            return when
        return to_local_naive(when.astimezone(UTC), self.schedule.zone)


def _after_or_min(day: date) -> date:
    return day + _DAY if day < date.max else day


# ---------------------------------------------------------------------- BD1 / BDL expressions

_BUSINESS_DAY_RE = re.compile(r"^BD(\d+|L)$", re.ASCII | re.IGNORECASE)


def is_business_day_expression(text: object) -> bool:
    """Whether a monthly expression is a business-day one (`BD1 09:00`, `BDL 17:00`).

    Anything starting with "BD" counts, so a malformed one gets this parser's error."""
    return isinstance(text, str) and text.strip()[:2].upper() == "BD"


@dataclass(frozen=True)
class BusinessDayRecurrence:
    """The n-th (or last) business day of each month at fixed local times."""

    calendar: BusinessCalendar
    ordinal: int  # 1 = the first business day; 0 = the last
    times: tuple[time, ...]
    elapsed: bool = False

    def day_in(self, year: int, month: int) -> date | None:
        if self.ordinal == 0:
            return self.calendar.last_business_day(year, month)
        return self.calendar.business_day_of_month(year, month, self.ordinal)

    def iter_local(self, start: datetime) -> Iterator[datetime]:
        year, month = start.year, start.month
        while True:
            day = self.day_in(year, month)
            if day is not None:
                for at in self.times:
                    candidate = datetime.combine(day, at)
                    if candidate >= start:
                        yield candidate
            if (year, month) == (9999, 12):
                return
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)


def max_business_days_in_month(weekend: Iterable[int]) -> int:
    """The most days a month can have outside the weekend (23 for Saturday and Sunday)."""
    closed = frozenset(weekend)
    return max(
        sum(1 for offset in range(31) if (first + offset) % 7 + 1 not in closed)
        for first in range(7)
    )


def parse_business_day_expression(
    expression: str, calendar: BusinessCalendar
) -> BusinessDayRecurrence:
    """`BD<n> HH:MM[,HH:MM...]` (the n-th business day) or `BDL HH:MM` (the last)."""
    parts = expression.split() if isinstance(expression, str) else []
    if len(parts) != 2:
        raise ValidationError(
            FIELD, f"{expression!r} must look like 'BD1 09:00', 'BD2 09:00,14:30' or 'BDL 17:00'"
        )
    match = _BUSINESS_DAY_RE.match(parts[0])
    if not match:
        raise ValidationError(
            FIELD, f"{parts[0]!r} must be BD followed by a day number (BD1, BD2, ...) or L"
        )
    ordinal = 0 if match.group(1).upper() == "L" else int(match.group(1))
    if match.group(1).upper() != "L":
        most = max_business_days_in_month(calendar.weekend)
        if not 1 <= ordinal <= most:
            raise ValidationError(
                FIELD,
                f"{parts[0]!r}: a month has 1 to {most} business days with this weekend",
            )
    return BusinessDayRecurrence(calendar, ordinal, _parse_times(parts[1]))


def business_day_schedule(
    expression: str,
    calendar: BusinessCalendar,
    timezone: str = "UTC",
    *,
    start_at: datetime | None = None,
    end_at: datetime | None = None,
    anchor_at: datetime | None = None,
) -> Schedule:
    """A monthly `Schedule` for a business-day expression, validated like `Schedule.parse`."""
    if not isinstance(expression, str) or not expression.strip():
        raise ValidationError(FIELD, "a monthly schedule needs an expression")
    recurrence = parse_business_day_expression(expression, calendar)
    zone = get_zone(timezone)
    start = ensure_utc(start_at, "schedule_start_at") if start_at else None
    end = ensure_utc(end_at, "schedule_end_at") if end_at else None
    if start and end and end <= start:
        raise ValidationError("schedule_end_at", "must be after schedule_start_at")
    anchor = ensure_utc(anchor_at, "schedule_anchor_at") if anchor_at else None
    schedule = Schedule(
        ScheduleType.MONTHLY, expression.strip(), zone, recurrence, start, end, anchor
    )
    reference = start or datetime(2000, 1, 1, tzinfo=UTC)
    if replace(schedule, end_at=None).next_after(reference - _TINY) is None:
        raise ValidationError(FIELD, f"{expression.strip()!r} never fires")
    return schedule
