"""A schedule cron cannot express (one under a business calendar, monthly L) as cron lines for a
bounded period: the lines, read by croniter in the schedule's zone, fire at exactly the
schedule's occurrences in the period (without the closed days under `skip`) and at nothing else
there."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apflow_server.core.errors import ValidationError
from apflow_server.schedules.calendars import BusinessCalendar, build_calendar
from apflow_server.schedules.plan import Timetable, schedule_of
from apflow_server.schedules.policy import closed_reason
from apflow_server.schedules.to_cron import (
    MAX_EXPANSION,
    BoundedCron,
    CronConversionError,
    expand_to_cron,
)

MUNICH = build_calendar(country="DE", subdivision="BY")
US = build_calendar(country="US")
TINY = timedelta(microseconds=1)


@dataclass
class Row:
    schedule_type: str
    schedule_expression: str
    schedule_timezone: str
    schedule_calendar: str | None = None
    schedule_calendar_rule: str = "skip"
    loaded_calendar: BusinessCalendar | None = None
    id: str = "t"
    schedule_start_at: datetime | None = None
    schedule_end_at: datetime | None = None
    schedule_anchor_at: datetime | None = None
    schedule_jitter_seconds: int = 0
    max_runs: int | None = None
    run_count: int = 0


def timetable(
    kind: str,
    expression: str,
    zone: str = "Europe/Berlin",
    calendar: BusinessCalendar | None = MUNICH,
    rule: str = "skip",
) -> Timetable:
    return schedule_of(
        Row(
            kind,
            expression,
            zone,
            schedule_calendar=None if calendar is None else "cal",
            schedule_calendar_rule=rule,
            loaded_calendar=calendar,
        )
    )


def fired(schedule: Timetable, start: datetime, end: datetime) -> list[datetime]:
    """What the service fires in [start, end): the occurrences, but not the closed days
    `skip` records as skipped."""
    found = []
    for fire in schedule.occurrences(start - TINY):
        if fire >= end:
            break
        if closed_reason(schedule, fire) is None:
            found.append(fire)
    return found


def cron_fires(expanded: BoundedCron) -> list[datetime]:
    """What a cron reading the lines in the zone (CRON_TZ, spec.timeZone) starts in the
    period, by croniter: an independent reading of the lines."""
    found = []
    for expression in expanded.expressions:
        runner = croniter(expression, expanded.start.astimezone(expanded.zone) - TINY)
        while True:
            instant = runner.get_next(datetime).astimezone(UTC)
            if instant >= expanded.end:
                break
            found.append(instant)
    return sorted(found)


def test_business_days_in_munich_over_a_winter() -> None:
    """Every day at 09:00, skipping weekends and Bavarian holidays: Christmas (Thursday 25
    and Friday 26 December 2031), New Year (Thursday 1 January 2032), Epiphany (Tuesday 6)."""
    schedule = timetable("daily", "09:00")
    start, end = datetime(2031, 12, 1, tzinfo=UTC), datetime(2032, 2, 1, tzinfo=UTC)
    expanded = expand_to_cron(schedule, start, end)
    assert expanded.expressions == (
        "0 9 2,5,7-9,12-16,19-23,26-30 1 *",
        "0 9 1-5,8-12,15-19,22-24,29-31 12 *",
    )
    assert expanded.zone == ZoneInfo("Europe/Berlin")
    assert expanded.fires == len(fired(schedule, start, end)) == 41
    assert cron_fires(expanded) == fired(schedule, start, end)


def test_bdl_and_monthly_l_become_one_line_per_run_of_days() -> None:
    schedule = timetable("monthly", "BDL 17:00", "America/New_York", US)
    start, end = datetime(2030, 1, 1, tzinfo=UTC), datetime(2030, 12, 31, tzinfo=UTC)
    expanded = expand_to_cron(schedule, start, end)
    # The last weekdays of 2030 that are not federal holidays: Friday 29 March (the 31st is
    # a Sunday), Friday 28 June, Friday 30 August, Friday 29 November (the 30th a Saturday);
    # December's is outside the period. Months with the same day share a line.
    assert expanded.expressions == (
        "0 17 31 1,5,7,10 *",
        "0 17 28 2,6 *",
        "0 17 29 3,11 *",
        "0 17 30 4,8,9 *",
    )
    assert cron_fires(expanded) == fired(schedule, start, end)
    plain_last_day = timetable("monthly", "L 06:00", "Europe/Paris", None)
    expanded = expand_to_cron(plain_last_day, start, end)
    assert cron_fires(expanded) == fired(plain_last_day, start, end)
    assert len(fired(plain_last_day, start, end)) == 11  # December 31 is outside


def test_moved_occurrences_fire_once_on_the_business_day() -> None:
    """next_business_day: Saturday's and Sunday's occurrences land on Monday's, once."""
    schedule = timetable("daily", "08:00", rule="next_business_day")
    start, end = datetime(2031, 5, 1, tzinfo=UTC), datetime(2031, 7, 1, tzinfo=UTC)
    expanded = expand_to_cron(schedule, start, end)
    assert cron_fires(expanded) == fired(schedule, start, end)
    mondays = [
        f for f in fired(schedule, start, end) if f.astimezone(expanded.zone).isoweekday() == 1
    ]
    assert len(mondays) == len(set(mondays)) > 0


def test_a_time_in_the_spring_forward_gap_is_read_where_it_fires() -> None:
    """Berlin skips 02:00-03:00 on Sunday 30 March 2031: a daily 02:30 fires at 03:30 that
    day (RFC 5545), and its line says 03:30. The calendar closes no weekend, but Friday 28."""
    calendar = build_calendar(weekend=[], dates=["2031-03-28"])
    schedule = timetable("daily", "02:30", "Europe/Berlin", calendar)
    start, end = datetime(2031, 3, 26, 12, tzinfo=UTC), datetime(2031, 4, 1, tzinfo=UTC)
    expanded = expand_to_cron(schedule, start, end)
    assert expanded.expressions == ("30 2 27,29,31 3 *", "30 3 30 3 *")
    assert cron_fires(expanded) == fired(schedule, start, end)


def test_a_repeated_local_time_is_refused() -> None:
    """Every half hour through the night Berlin falls back (2031-10-26): 02:00 and 02:30 come
    twice, which no cron line can tell apart."""
    schedule = timetable("cron", "*/30 * * * *", calendar=None)
    start, end = datetime(2031, 10, 25, tzinfo=UTC), datetime(2031, 10, 27, tzinfo=UTC)
    with pytest.raises(CronConversionError, match="cannot tell them apart"):
        expand_to_cron(schedule, start, end)


def test_periods_cron_cannot_hold_are_refused() -> None:
    schedule = timetable("daily", "09:00")
    start = datetime(2031, 1, 1, tzinfo=UTC)
    with pytest.raises(ValidationError, match="at most a year") as raised:
        expand_to_cron(schedule, start, start + MAX_EXPANSION + timedelta(minutes=1))
    assert raised.value.field == "end"
    with pytest.raises(ValidationError, match="after start"):
        expand_to_cron(schedule, start, start)
    seconds = timetable("cron", "*/5 * * * * 30", calendar=None)
    with pytest.raises(CronConversionError, match="whole minute"):
        expand_to_cron(seconds, start, start + timedelta(days=1))


def test_the_period_is_whole_minutes_and_its_start_is_inclusive() -> None:
    schedule = timetable("daily", "09:00", "UTC", None)
    expanded = expand_to_cron(
        schedule, datetime(2031, 1, 6, 9, 0, tzinfo=UTC), datetime(2031, 1, 7, 9, 0, 1, tzinfo=UTC)
    )
    assert (expanded.start, expanded.end) == (
        datetime(2031, 1, 6, 9, 0, tzinfo=UTC),
        datetime(2031, 1, 7, 9, 1, tzinfo=UTC),
    )
    assert expanded.expressions == ("0 9 6,7 1 *",) and expanded.fires == 2


SHAPES = (
    ("daily", "09:00"),
    ("daily", "06:30,18:45"),
    ("weekly", "1-5 08:00"),
    ("weekly", "3 23:30"),
    ("cron", "15 */4 * * 1-5"),
    ("monthly", "BD1 09:00"),
    ("monthly", "BD3 07:00"),
    ("monthly", "BDL 17:00"),
    ("monthly", "1,15 12:00"),
)
CALENDARS = (MUNICH, US, build_calendar(country="GB", subdivision="ENG", weekend=[5, 6]))
ZONES = ("Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Sydney")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shape=st.sampled_from(SHAPES),
    calendar=st.sampled_from(CALENDARS),
    zone=st.sampled_from(ZONES),
    rule=st.sampled_from(("skip", "next_business_day", "previous_business_day")),
    start=st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2036, 1, 1)),
    days=st.integers(min_value=1, max_value=365),
)
def test_the_lines_fire_exactly_the_occurrences(
    shape: tuple[str, str],
    calendar: BusinessCalendar,
    zone: str,
    rule: str,
    start: datetime,
    days: int,
) -> None:
    schedule = timetable(*shape, zone, calendar, rule)
    begin = start.replace(tzinfo=UTC)
    try:
        expanded = expand_to_cron(schedule, begin, begin + timedelta(days=days))
    except CronConversionError as error:  # only where a DST fall-back repeats a local time
        assert "cannot tell them apart" in str(error)
        return
    wanted = fired(schedule, expanded.start, expanded.end)
    assert cron_fires(expanded) == wanted
    assert expanded.fires == len(wanted)
