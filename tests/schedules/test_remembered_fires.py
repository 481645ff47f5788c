"""Schedules that share a recurrence and a zone share its next fire time: at the top of a
busy minute every task on the same cron asks the same question, and only the first computes
the answer. What is remembered must be what would be computed, DST transitions included."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from apflow_server.schedules.calendars import build_calendar, parse_business_day_expression
from apflow_server.schedules.schedule import (
    Schedule,
    _remembered_wall_clock_next,
    wall_clock_next,
)


def test_the_second_schedule_on_the_same_cron_and_zone_is_answered_from_memory() -> None:
    first = Schedule.parse("cron", "17 * * * *", "Asia/Kathmandu")
    second = Schedule.parse("cron", "17  *  * * *", "Asia/Kathmandu")  # another task's row
    instant = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
    expected = first.next_after(instant)
    before = _remembered_wall_clock_next.cache_info()
    assert second.next_after(instant) == expected
    after = _remembered_wall_clock_next.cache_info()
    assert (after.hits - before.hits, after.misses - before.misses) == (1, 0)
    # a different zone is a different question
    assert Schedule.parse("cron", "17 * * * *", "UTC").next_after(instant) != expected


@pytest.mark.parametrize(
    ("kind", "expression", "zone", "around"),
    [
        ("cron", "30 2 * * *", "America/New_York", datetime(2026, 3, 8, 7, tzinfo=UTC)),  # gap
        ("cron", "30 1 * * *", "America/New_York", datetime(2026, 11, 1, 6, tzinfo=UTC)),  # fold
        ("cron", "*/20 * * * *", "Europe/Berlin", datetime(2026, 10, 25, 1, tzinfo=UTC)),
        ("daily", "02:30", "Europe/Berlin", datetime(2026, 3, 29, 1, tzinfo=UTC)),
        ("weekly", "7 01:30", "America/New_York", datetime(2026, 11, 1, 5, tzinfo=UTC)),
        ("monthly", "L 23:45", "Australia/Lord_Howe", datetime(2026, 4, 4, 12, tzinfo=UTC)),
    ],
)
def test_remembered_answers_are_the_computed_ones_across_transitions(
    kind: str, expression: str, zone: str, around: datetime
) -> None:
    schedule = Schedule.parse(kind, expression, zone)
    for minutes in range(-240, 240, 7):
        instant = around + timedelta(minutes=minutes, seconds=minutes % 3)
        for inclusive in (False, True):
            computed = wall_clock_next(schedule.recurrence, schedule.zone, instant, inclusive)  # type: ignore[arg-type]
            for _ in range(2):  # the second from memory
                assert schedule._first_from(instant, inclusive) == computed


def test_business_day_schedules_are_not_remembered_their_calendar_can_change() -> None:
    recurrence = parse_business_day_expression("BD1 09:00", build_calendar(weekend=[6, 7]))
    zone = ZoneInfo("Europe/Paris")
    schedule = Schedule.parse("daily", "09:00", "Europe/Paris")
    before = _remembered_wall_clock_next.cache_info()
    instant = datetime(2026, 12, 6, tzinfo=UTC)
    fire = schedule._wall_clock_from(recurrence, instant, inclusive=False)
    assert fire == datetime(2027, 1, 1, 8, tzinfo=UTC)  # a Friday, no holidays in it
    assert fire == wall_clock_next(recurrence, zone, instant, inclusive=False)
    after = _remembered_wall_clock_next.cache_info()
    assert (after.hits, after.misses) == (before.hits, before.misses)


def test_an_instant_given_with_another_offset_is_answered_as_its_utc_reading() -> None:
    """One instant written with two offsets is one key: what is remembered is computed from
    UTC, so asking with an offset first cannot plant a wrong answer (Berlin's autumn change)."""
    schedule = Schedule.parse("cron", "*/20 * * * *", "Europe/Berlin")
    instant = datetime(2026, 10, 24, 22, 0, tzinfo=UTC)
    elsewhere = instant.astimezone(timezone(timedelta(hours=5)))
    assert schedule._wall_clock_from(schedule.recurrence, elsewhere, False) == datetime(  # type: ignore[arg-type]
        2026, 10, 24, 22, 20, tzinfo=UTC
    )
    assert schedule.next_after(instant) == datetime(2026, 10, 24, 22, 20, tzinfo=UTC)
