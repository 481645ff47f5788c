"""The schedule engine: when does a schedule fire next? Pure time math, no I/O.

Wall-clock schedules are evaluated in their zone by RFC 5545 rules (see `timezones`).
Interval schedules run on elapsed time from a fixed anchor, so the grid never drifts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError

from apflow_server.core.errors import ValidationError
from apflow_server.core.types import ScheduleType
from apflow_server.schedules.expressions import (
    FIELD,
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

# Real DST shifts are at most two hours: the offset this long before an instant is the offset
# before any gap that instant could be inside.
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


def parse_schedule_type(value: object) -> ScheduleType:
    try:
        return ScheduleType(str(value).strip().lower())
    except ValueError:
        names = ", ".join(t.value for t in ScheduleType)
        raise ValidationError("schedule_type", f"must be one of {names}") from None


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
        if self.start_at and instant < self.start_at:
            found = self._first_from(self.start_at, inclusive=True)
        else:
            found = self._first_from(instant, inclusive=False)
        if found is None or (self.end_at and found > self.end_at):
            return None
        return found

    def occurrences(self, after: datetime) -> Iterator[datetime]:
        """Every fire time strictly after `after`, ascending, until the end bound."""
        current: datetime | None = after
        while current is not None:
            current = self.next_after(current)
            if current is not None:
                yield current

    def preview(
        self, count: int, after: datetime, remaining_runs: int | None = None
    ) -> list[datetime]:
        """The next `count` fire times after `after` (fewer when bounds or max_runs end it)."""
        limit = count if remaining_runs is None else max(0, min(count, remaining_runs))
        result: list[datetime] = []
        for fire in self.occurrences(after):
            if len(result) >= limit:
                break
            result.append(fire)
        return result

    def first_fire(self, now: datetime) -> datetime | None:
        """The occurrence a freshly enabled schedule waits for.

        A `once` schedule that has not run yet is due at its instant even when that is past:
        the misfire policy then decides (run it now, or record it missed).
        """
        if self.type is ScheduleType.ONCE:
            when = self.once_instant()
            if self.end_at and when > self.end_at:
                return None
            return when
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
        """Scan local candidates from a little before `instant`.

        The fold=0 mapping of local to UTC is monotonic except for times inside a gap (they map
        past the first times after it). So the answer is the earliest qualifying instant seen up
        to and including the first *regular* candidate that qualifies: every later candidate
        maps later still.
        """
        local_start = to_local_naive(instant, self.zone)
        if not recurrence.elapsed:
            # A gap time maps to (local - offset before the gap): scan from there as well.
            earlier_offset = (instant - _LOOKBACK).astimezone(self.zone).utcoffset()
            assert earlier_offset is not None
            local_start = min(local_start, (instant + earlier_offset).replace(tzinfo=None))
        local_start = local_start.replace(microsecond=0)
        horizon = local_start + _HORIZON
        best: datetime | None = None
        try:
            for candidate in recurrence.iter_local(local_start):
                if candidate > horizon:
                    return best
                resolved = resolve_local(candidate, self.zone)
                if resolved.kind is LocalKind.GAP and recurrence.elapsed:
                    continue  # elapsed-time schedules: a skipped hour is not a real hour
                instants = [resolved.first]
                if resolved.second is not None and recurrence.elapsed:
                    instants.append(resolved.second)
                for fire in instants:
                    if fire > instant or (inclusive and fire == instant):
                        if best is None or fire < best:
                            best = fire
                if resolved.kind is LocalKind.REGULAR and best is not None:
                    return best
        except (CroniterBadDateError, OverflowError):
            return best
        return best

    def _check_fires(self) -> None:
        if isinstance(self.recurrence, OnceRecurrence | IntervalRecurrence):
            return
        reference = self.start_at or datetime(2000, 1, 1, tzinfo=UTC)
        if self._wall_clock_from(self.recurrence, reference, inclusive=True) is None:
            raise ValidationError(FIELD, f"{self.expression!r} never fires")


def jitter_delay(task_id: str, scheduled_for: datetime, max_seconds: int) -> timedelta:
    """A deterministic delay in [0, max_seconds] for one occurrence of one task.

    Deterministic so every scheduler process agrees on when an occurrence is due.
    """
    if max_seconds <= 0:
        return timedelta(0)
    key = f"{task_id}|{scheduled_for.astimezone(UTC).isoformat()}".encode()
    digest = int.from_bytes(hashlib.sha256(key).digest()[:8], "big")
    return timedelta(seconds=digest % (max_seconds + 1))
