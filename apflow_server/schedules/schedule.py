"""The schedule engine: when does a schedule fire next? Pure time math, no I/O.

Wall-clock schedules are evaluated in their zone by RFC 5545 rules (see `timezones`).
Interval schedules run on elapsed time from a fixed anchor, so the grid never drifts.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError

from apflow_server.core.errors import ValidationError
from apflow_server.core.types import ScheduleType, parse_schedule_type
from apflow_server.schedules.expressions import (
    FIELD,
    CronRecurrence,
    DayTimesRecurrence,
    IntervalRecurrence,
    OnceRecurrence,
    WallClockRecurrence,
    parse_cron,
    parse_daily,
    parse_interval,
    parse_monthly,
    parse_once,
    parse_weekly,
)
from apflow_server.schedules.timezones import (
    LocalKind,
    ensure_utc,
    get_zone,
    resolve_local,
    to_local_naive,
)

# Real DST shifts are at most two hours: the offsets this long before and after an instant
# include those on both sides of any transition the instant could be inside.
_LOOKBACK = timedelta(hours=3)
# A valid expression that has not fired for this long never will (Feb 29 recurs within 8 years).
_HORIZON = timedelta(days=366 * 30)

Recurrence = WallClockRecurrence | IntervalRecurrence | OnceRecurrence

_PARSERS: dict[ScheduleType, Callable[[str], Recurrence]] = {
    ScheduleType.INTERVAL: parse_interval,
    ScheduleType.ONCE: parse_once,
    ScheduleType.CRON: parse_cron,
    ScheduleType.DAILY: parse_daily,
    ScheduleType.WEEKLY: parse_weekly,
    ScheduleType.MONTHLY: parse_monthly,
}


@dataclass(frozen=True)
class Schedule:
    """A validated schedule. Build it with `Schedule.parse`."""

    type: ScheduleType
    expression: str
    zone: ZoneInfo
    recurrence: Recurrence
    start_at: datetime | None = None
    end_at: datetime | None = None
    anchor_at: datetime | None = None  # interval without start_at: the grid's first instant

    @classmethod
    def parse(
        cls,
        schedule_type: object,
        expression: object,
        timezone: str = "UTC",
        *,
        start_at: datetime | None = None,
        end_at: datetime | None = None,
        anchor_at: datetime | None = None,
    ) -> Schedule:
        kind = parse_schedule_type(schedule_type)
        if not isinstance(expression, str) or not expression.strip():
            raise ValidationError(FIELD, f"a {kind.value} schedule needs an expression")
        zone = get_zone(timezone)
        start = ensure_utc(start_at, "schedule_start_at") if start_at else None
        end = ensure_utc(end_at, "schedule_end_at") if end_at else None
        if start and end and end <= start:
            raise ValidationError("schedule_end_at", "must be after schedule_start_at")
        anchor = ensure_utc(anchor_at, "schedule_anchor_at") if anchor_at else None
        schedule = cls(
            kind, expression.strip(), zone, _PARSERS[kind](expression), start, end, anchor
        )
        if kind is ScheduleType.ONCE:
            try:  # a wall-clock instant at the ends of the range may have no UTC reading
                schedule.once_instant()
            except OverflowError:
                raise ValidationError(
                    FIELD, "the instant must lie between the years 1 and 9999 in UTC"
                ) from None
        schedule._check_fires()
        return schedule

    # ------------------------------------------------------------------ queries

    @property
    def timezone(self) -> str:
        return self.zone.key

    def once_instant(self) -> datetime:
        """The instant of a `once` schedule (a local expression read in the schedule's zone)."""
        assert isinstance(self.recurrence, OnceRecurrence)
        when = self.recurrence.when
        if when.tzinfo is not None:
            return when.astimezone(UTC)
        return resolve_local(when, self.zone).first

    def next_after(self, instant: datetime) -> datetime | None:
        """The first fire time strictly after `instant`, within the bounds; None when exhausted."""
        instant = ensure_utc(instant, "after")
        try:
            if self.start_at and instant < self.start_at:
                found = self._first_from(self.start_at, inclusive=True)
            else:
                found = self._first_from(instant, inclusive=False)
        except OverflowError:  # past year 9999: nothing more can fire
            return None
        if found is None or (self.end_at and found > self.end_at):
            return None
        return found

    def occurrences(self, after: datetime) -> Iterator[datetime]:
        """Every fire time strictly after `after`, ascending, until the end bound."""
        return occurrences_from(self.next_after, after)

    def preview(
        self,
        count: int,
        after: datetime,
        remaining_runs: int | None = None,
        *,
        between_steps: Callable[[], None] | None = None,
    ) -> list[datetime]:
        """The next `count` fire times after `after` (fewer when bounds or max_runs end it).

        `between_steps` is called before each search; it may raise to stop a long preview."""
        return preview_from(self.next_after, count, after, remaining_runs, between_steps)

    def first_fire(self, now: datetime) -> datetime | None:
        """The occurrence a freshly enabled schedule waits for.

        A `once` schedule that has not run yet is due at its instant even when that is past:
        the misfire policy then decides (run it now, or record it missed).
        """
        if self.type is ScheduleType.ONCE:
            when = self.once_instant()
            outside = (self.end_at and when > self.end_at) or (
                self.start_at and when < self.start_at
            )
            return None if outside else when
        return self.next_after(now)

    # ------------------------------------------------------------------ internals

    def _first_from(self, instant: datetime, inclusive: bool) -> datetime | None:
        recurrence = self.recurrence
        if isinstance(recurrence, OnceRecurrence):
            when = self.once_instant()
            return when if when > instant or (inclusive and when == instant) else None
        if isinstance(recurrence, IntervalRecurrence):
            return self._interval_from(recurrence.period, instant, inclusive)
        return self._wall_clock_from(recurrence, instant, inclusive)

    def _interval_from(self, period: timedelta, instant: datetime, inclusive: bool) -> datetime:
        anchor = self.start_at or self.anchor_at
        if anchor is None:
            raise ValueError("an interval schedule needs schedule_start_at or an anchor")
        if instant < anchor or (inclusive and instant == anchor):
            return anchor
        steps, remainder = divmod(instant - anchor, period)
        if inclusive and remainder == timedelta(0):
            return instant
        return anchor + (steps + 1) * period

    def _wall_clock_from(
        self, recurrence: WallClockRecurrence, instant: datetime, inclusive: bool
    ) -> datetime | None:
        """The first fire time at (if inclusive) or after `instant` (see `wall_clock_next`)."""
        if instant.tzinfo is not UTC:
            # Aware datetimes of one instant are equal keys whatever their offset, and the
            # computation reads the offset: remembered answers are computed from UTC only.
            instant = instant.astimezone(UTC)
        if isinstance(recurrence, _PLAIN_RECURRENCES):
            return _remembered_wall_clock_next(recurrence, self.zone, instant, inclusive)
        return wall_clock_next(recurrence, self.zone, instant, inclusive)

    def _check_fires(self) -> None:
        if isinstance(self.recurrence, OnceRecurrence | IntervalRecurrence):
            return
        reference = self.start_at or datetime(2000, 1, 1, tzinfo=UTC)
        if self._wall_clock_from(self.recurrence, reference, inclusive=True) is None:
            raise ValidationError(FIELD, f"{self.expression!r} never fires")


def wall_clock_next(
    recurrence: WallClockRecurrence, zone: ZoneInfo, instant: datetime, inclusive: bool
) -> datetime | None:
    """The first time `recurrence` fires in `zone` at (if inclusive) or after `instant` (UTC).

    Away from a transition, local time maps to UTC with one offset and a plain scan works.
    Within a few hours of one, each of the two offsets is a "reading" of local time, and
    within a reading instants grow with local time; so the answer is the smaller of the
    first candidate valid under the earlier offset (times before the transition and, for
    wall-clock schedules, RFC 5545's reading of gap times) and the first valid under the
    later one (from where that offset starts to apply to this kind of schedule).
    """
    before = (instant - _LOOKBACK).astimezone(zone).utcoffset()
    after = (instant + _LOOKBACK).astimezone(zone).utcoffset()
    assert before is not None and after is not None
    try:
        if before == after:
            return _scan(recurrence, zone, instant, inclusive)
        transition = _transition_between(instant - _LOOKBACK, instant + _LOOKBACK, zone)
        # Wall-clock schedules fire at the first pass of a repeated stretch only, so the
        # later offset applies to them from its end; elapsed-time ones fire in both passes.
        later_from = transition + (after if recurrence.elapsed else max(before, after))
        fires = [
            fire
            for fire in (
                _first_in_reading(recurrence, zone, instant, inclusive, before, None),
                _first_in_reading(
                    recurrence, zone, instant, inclusive, after, later_from.replace(tzinfo=None)
                ),
            )
            if fire is not None
        ]
        if fires:
            return min(fires)
        # Nothing near the transition: continue from beyond it.
        return _scan(recurrence, zone, transition + _LOOKBACK, inclusive=False)
    except (CroniterBadDateError, OverflowError):
        return None


# Schedules fire together: every task on "* * * * *" (or "daily 09:00" in one zone) asks for
# the same next fire time after the same instant when it fires, 10,000 times at the top of a
# busy minute, at ~45 us each. The answer depends only on the recurrence, the zone and the
# instant, so it is remembered. Only for recurrences that are plain values (their equality is
# their content): a business-day one holds a calendar, whose days can change.
_PLAIN_RECURRENCES = CronRecurrence | DayTimesRecurrence
_remembered_wall_clock_next = functools.lru_cache(maxsize=4096)(wall_clock_next)


def _first_in_reading(
    recurrence: WallClockRecurrence,
    zone: ZoneInfo,
    instant: datetime,
    inclusive: bool,
    offset: timedelta,
    not_before: datetime | None,
) -> datetime | None:
    """The first candidate that fires at (local - offset) after `instant`, if it is a real
    fire time of this schedule; None when the first such candidate is not."""
    start = (instant + offset).replace(tzinfo=None, microsecond=0)
    if not_before is not None:
        start = max(start, not_before)
    for candidate in itertools.islice(recurrence.iter_local(start), 3):
        fire = candidate.replace(tzinfo=UTC) - offset
        if fire < instant or (fire == instant and not inclusive):
            continue  # the start was rounded down to whole seconds
        return fire if fire in fires_of(candidate, zone, recurrence.elapsed) else None
    return None


def fires_of(local: datetime, zone: ZoneInfo, elapsed: bool) -> list[datetime]:
    """The instants a local wall-clock time fires at: RFC 5545's one for wall-clock
    schedules; every real one (none in a gap, both passes of a repeated time) for elapsed-time
    (every-hour) ones."""
    resolved = resolve_local(local, zone)
    if resolved.kind is LocalKind.GAP and elapsed:
        return []
    if resolved.second is not None and elapsed:
        return [resolved.first, resolved.second]
    return [resolved.first]


def _scan(
    recurrence: WallClockRecurrence, zone: ZoneInfo, instant: datetime, inclusive: bool
) -> datetime | None:
    """Scan local candidates from the local reading of `instant` (no transition nearby).

    Later candidates can still cross a transition; the fold=0 mapping stays monotonic
    except for gap times (they map past the first times after the gap), so the answer is
    the earliest qualifying instant up to and including the first regular one.
    """
    local_start = to_local_naive(instant, zone).replace(microsecond=0)
    horizon = local_start + _HORIZON
    best: datetime | None = None
    for candidate in recurrence.iter_local(local_start):
        if candidate > horizon:
            return best
        for fire in fires_of(candidate, zone, recurrence.elapsed):
            if (fire > instant or (inclusive and fire == instant)) and (
                best is None or fire < best
            ):
                best = fire
        if best is not None and resolve_local(candidate, zone).kind is LocalKind.REGULAR:
            return best
    return best


def _transition_between(low: datetime, high: datetime, zone: ZoneInfo) -> datetime:
    """The first instant in (low, high] with the offset in force at `high` (to the second)."""
    low_offset = low.astimezone(zone).utcoffset()
    lo, hi = math.floor(low.timestamp()), math.ceil(high.timestamp())
    while hi - lo > 1:
        middle = (lo + hi) // 2
        if datetime.fromtimestamp(middle, UTC).astimezone(zone).utcoffset() == low_offset:
            lo = middle
        else:
            hi = middle
    return datetime.fromtimestamp(hi, UTC)


def occurrences_from(
    next_after: Callable[[datetime], datetime | None], after: datetime
) -> Iterator[datetime]:
    """Every fire time strictly after `after`, ascending, as `next_after` finds them."""
    current: datetime | None = after
    while current is not None:
        current = next_after(current)
        if current is not None:
            yield current


def preview_from(
    next_after: Callable[[datetime], datetime | None],
    count: int,
    after: datetime,
    remaining_runs: int | None = None,
    between_steps: Callable[[], None] | None = None,
) -> list[datetime]:
    """The next `count` fire times after `after`, at most `remaining_runs` of them."""
    limit = count if remaining_runs is None else max(0, min(count, remaining_runs))
    result: list[datetime] = []
    current = after
    while len(result) < limit:
        if between_steps is not None:
            between_steps()
        found = next_after(current)
        if found is None:
            break
        result.append(found)
        current = found
    return result


def jitter_delay(task_id: str, scheduled_for: datetime, max_seconds: int) -> timedelta:
    """A deterministic delay in [0, max_seconds] for one occurrence of one task.

    Deterministic so every scheduler process agrees on when an occurrence is due.
    """
    if max_seconds <= 0:
        return timedelta(0)
    key = f"{task_id}|{scheduled_for.astimezone(UTC).isoformat()}".encode()
    digest = int.from_bytes(hashlib.sha256(key).digest()[:8], "big")
    return timedelta(seconds=digest % (max_seconds + 1))
