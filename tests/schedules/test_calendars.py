"""Business calendars: closed days, the n-th business day, and schedules moved or skipped.

The hand-written cases spell out the expected dates (with the reason they are right); the
property tests compare every rule against an oracle built here from the `holidays` package and
`zoneinfo` alone, never from the calendar module's own helpers.
"""

from __future__ import annotations

import calendar as gregorian
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from zoneinfo import ZoneInfo

import holidays
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from apflow_server.core.errors import ValidationError
from apflow_server.schedules import Schedule
from apflow_server.schedules.calendars import (
    MAX_CLOSED_RUN,
    BusinessCalendar,
    CalendarRule,
    CalendarSchedule,
    build_calendar,
    business_day_schedule,
    is_business_day_expression,
    parse_business_day_expression,
    parse_calendar_rule,
)

SKIP, NEXT, PREVIOUS = CalendarRule.SKIP, CalendarRule.NEXT, CalendarRule.PREVIOUS


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def d(text: str) -> date:
    return date.fromisoformat(text)


def field_of(error: pytest.ExceptionInfo[ValidationError]) -> str:
    data = error.value.data
    assert isinstance(data, dict)
    return str(data["field"])


@cache
def bavaria() -> BusinessCalendar:
    return build_calendar(country="DE", subdivision="BY")


@cache
def germany() -> BusinessCalendar:
    return build_calendar(country="DE")


@cache
def united_states() -> BusinessCalendar:
    return build_calendar(country="US")


@cache
def weekends() -> BusinessCalendar:
    """Saturday and Sunday closed, no holidays."""
    return build_calendar()


# ---------------------------------------------------------------------- closed days


def test_bavaria_2031_closes_whit_monday_and_corpus_christi_with_their_names() -> None:
    cal = bavaria()
    # Easter 2031 is April 13: Whit Monday is Easter + 50 days, Corpus Christi Easter + 60.
    assert cal.closed_reason(d("2031-06-02")) == "Pentecost Monday"
    assert cal.closed_reason(d("2031-06-12")) == "Corpus Christi"
    assert not cal.is_business_day(d("2031-06-02"))
    assert not cal.is_business_day(d("2031-06-12"))
    # The Tuesday after Whit Monday and the Friday after Corpus Christi are ordinary days.
    assert cal.closed_reason(d("2031-06-03")) is None
    assert cal.is_business_day(d("2031-06-13"))


def test_assumption_day_is_a_bavarian_holiday_only_in_the_catholic_category() -> None:
    # Mariä Himmelfahrt is a holiday in Bavaria's mainly Catholic municipalities only, so the
    # `holidays` package lists it in its "catholic" category, not in the default "public" one.
    assert bavaria().is_business_day(d("2031-08-15"))
    catholic = build_calendar(country="DE", subdivision="BY", categories=["public", "catholic"])
    assert catholic.closed_reason(d("2031-08-15")) == "Assumption Day"
    assert catholic.closed_reason(d("2031-06-12")) == "Corpus Christi"
    assert catholic.is_business_day(d("2031-08-14"))  # the Thursday before


def test_us_2027_independence_day_observed_and_thanksgiving() -> None:
    cal = united_states()
    # July 4, 2027 is a Sunday: the federal holiday is observed on Monday, July 5. The Sunday
    # is closed under its holiday name (a holiday outranks the weekend).
    assert cal.closed_reason(d("2027-07-04")) == "Independence Day"
    assert cal.closed_reason(d("2027-07-05")) == "Independence Day (observed)"
    assert cal.is_business_day(d("2027-07-06"))
    # Thanksgiving is the fourth Thursday of November: Nov 4, 11, 18, 25.
    assert cal.closed_reason(d("2027-11-25")) == "Thanksgiving Day"
    assert cal.is_business_day(d("2027-11-26"))
    assert cal.closed_reason(d("2027-11-27")) == "weekend"


def test_precedence_explicit_then_holiday_then_ics_then_weekend() -> None:
    ics = ics_text(
        ("20281225", "20281227", "Office closed"),  # Christmas Day (Mon) and Boxing Day (Tue)
        ("20281228", "20281231", "Inventory"),  # Thu 28, Fri 29, Sat 30
    )
    cal = build_calendar(
        country="GB",
        subdivision="ENG",
        dates=[{"date": "2028-12-26", "reason": "Staff party"}, "2028-12-27"],
        ics=ics,
    )
    assert cal.closed_reason(d("2028-12-25")) == "Christmas Day"  # holiday beats the import
    assert cal.closed_reason(d("2028-12-26")) == "Staff party"  # explicit beats the holiday
    assert cal.closed_reason(d("2028-12-27")) == "closed"  # explicit, no reason given
    assert cal.closed_reason(d("2028-12-28")) == "Inventory"
    assert cal.closed_reason(d("2028-12-30")) == "Inventory"  # the import beats the weekend
    assert cal.closed_reason(d("2028-12-31")) == "weekend"  # DTEND is exclusive
    assert cal.closed_reason(d("2029-01-02")) is None
    assert cal.days(d("2028-12-29"), d("2029-01-03")) == [
        (d("2028-12-29"), "Inventory"),
        (d("2028-12-30"), "Inventory"),
        (d("2028-12-31"), "weekend"),
        (d("2029-01-01"), "New Year's Day"),
        (d("2029-01-02"), None),
    ]


def test_ics_import_reads_all_day_events_only() -> None:
    text = (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\n"
        "BEGIN:VEVENT\r\nUID:a\r\nDTSTART;VALUE=DATE:20300415\r\nDURATION:P2D\r\n"
        "SUMMARY:Offsite\r\nEND:VEVENT\r\n"
        "BEGIN:VEVENT\r\nUID:b\r\nDTSTART:20300417T100000Z\r\nDTEND:20300417T120000Z\r\n"
        "SUMMARY:A meeting\r\nEND:VEVENT\r\n"
        "BEGIN:VEVENT\r\nUID:c\r\nDTSTART;VALUE=DATE:20300418\r\nSTATUS:CANCELLED\r\n"
        "SUMMARY:Called off\r\nEND:VEVENT\r\n"
        "BEGIN:VEVENT\r\nUID:d\r\nDTSTART;VALUE=DATE:20300416\r\nSUMMARY:Audit\r\nEND:VEVENT\r\n"
        "END:VCALENDAR\r\n"
    )
    cal = build_calendar(ics=text)
    assert cal.closed_reason(d("2030-04-15")) == "Offsite"
    assert cal.closed_reason(d("2030-04-16")) == "Offsite; Audit"  # both events of that day
    assert cal.is_business_day(d("2030-04-17"))  # a timed event closes nothing
    assert cal.is_business_day(d("2030-04-18"))  # a cancelled one neither
    assert build_calendar(ics="BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n").imported_dates == {}


def test_fingerprint_is_the_definition() -> None:
    one = build_calendar(weekend=[7, 6], country="de", dates=["2030-01-02", "2030-01-03"])
    two = build_calendar(country="DE", dates=["2030-01-03", "2030-01-02"])
    assert one.fingerprint() == two.fingerprint() and one == two and hash(one) == hash(two)
    assert len(one.fingerprint()) == 64
    other = build_calendar(country="DE", dates=["2030-01-03"])
    assert other.fingerprint() != one.fingerprint()
    assert build_calendar(weekend=[5, 6]).fingerprint() != build_calendar().fingerprint()


# ---------------------------------------------------------------------- searches


def test_next_business_day_across_a_month_end_and_a_year_end() -> None:
    cal = germany()
    # Friday 2027-12-31 is open; 2028-01-01 is New Year's Day and a Saturday, then Sunday.
    assert cal.next_business_day(d("2027-12-31"), include=True) == d("2027-12-31")
    assert cal.next_business_day(d("2027-12-31"), include=False) == d("2028-01-03")
    # Friday 2027-04-30 (US): the weekend, then Monday May 3.
    assert united_states().next_business_day(d("2027-04-30"), include=False) == d("2027-05-03")


def test_previous_business_day_across_a_month_start() -> None:
    # Monday 2028-05-01 is Labour Day in Germany, April 29-30 a weekend: back to Friday.
    assert germany().previous_business_day(d("2028-05-02"), include=False) == d("2028-04-28")
    assert germany().previous_business_day(d("2028-05-01"), include=True) == d("2028-04-28")
    assert germany().previous_business_day(d("2028-05-02"), include=True) == d("2028-05-02")
    # US: Monday 2027-07-05 is Independence Day observed; Friday July 2 is the day before.
    assert united_states().previous_business_day(d("2027-07-06"), include=False) == d("2027-07-02")


def test_nth_and_last_business_day_of_a_month() -> None:
    # January 2028: Sat 1 (New Year), Sun 2, so the first business day is Monday the 3rd. In
    # Bavaria Thursday the 6th is Epiphany, so the fourth is Friday the 7th.
    assert germany().business_day_of_month(2028, 1, 1) == d("2028-01-03")
    assert bavaria().business_day_of_month(2028, 1, 4) == d("2028-01-07")
    assert germany().business_day_of_month(2028, 1, 4) == d("2028-01-06")
    # August 2031 ends Sat 30, Sun 31; with Friday the 29th closed the last is Thursday 28th.
    closed = build_calendar(country="DE", subdivision="BY", dates=["2031-08-29"])
    assert closed.last_business_day(2031, 8) == d("2031-08-28")
    # February 2030 has 20 weekdays (Feb 1 is a Friday) and no German holiday.
    assert germany().business_day_of_month(2030, 2, 20) == d("2030-02-28")
    assert germany().business_day_of_month(2030, 2, 21) is None
    with pytest.raises(ValueError):
        germany().business_day_of_month(2030, 2, 0)


def test_a_month_without_business_days() -> None:
    june = [f"2030-06-{day:02d}" for day in range(1, 31)]
    cal = build_calendar(dates=june)
    assert cal.last_business_day(2030, 6) is None
    assert cal.business_day_of_month(2030, 6, 1) is None
    # Friday May 31 and Monday July 1 are the neighbours.
    assert cal.next_business_day(d("2030-05-31"), include=False) == d("2030-07-01")
    assert cal.previous_business_day(d("2030-07-01"), include=False) == d("2030-05-31")


def test_searches_are_bounded() -> None:
    # Built directly (build_calendar refuses it): closed for 400 days from 2030-01-01.
    start = d("2030-01-01")
    shut = BusinessCalendar(closed={start + timedelta(days=i): "shut" for i in range(400)})
    with pytest.raises(ValidationError) as error:
        shut.next_business_day(start, include=True)
    assert field_of(error) == "calendar" and "never opens" in error.value.message
    with pytest.raises(ValidationError) as error:
        shut.previous_business_day(start + timedelta(days=399), include=True, field="cal")
    assert field_of(error) == "cal"
    # A closure of exactly MAX_CLOSED_RUN days is still crossed.
    long = BusinessCalendar(
        weekend=(), closed={start + timedelta(days=i): "x" for i in range(MAX_CLOSED_RUN)}
    )
    assert long.next_business_day(start, include=True) == start + timedelta(days=MAX_CLOSED_RUN)


# ---------------------------------------------------------------------- rules


def daily(times: str, zone: str = "UTC", **bounds: datetime) -> Schedule:
    return Schedule.parse("daily", times, zone, **bounds)


def test_skip_keeps_the_sequence_and_names_the_closed_days() -> None:
    base = daily("09:00", "Europe/Berlin")
    ruled = CalendarSchedule(base, bavaria(), SKIP)
    after = utc("2031-05-30T12:00:00")
    assert ruled.preview(5, after) == base.preview(5, after)
    reasons = [ruled.closed_reason(fire) for fire in ruled.preview(5, after)]
    # Sat May 31, Sun June 1, Whit Monday June 2, Tue 3, Wed 4.
    assert reasons == ["weekend", "weekend", "Pentecost Monday", None, None]


def test_next_merges_moved_occurrences_with_the_days_own() -> None:
    # Daily 09:00 in Berlin (CEST, +02): Saturday's and Sunday's occurrences move to Monday
    # 09:00, which is Monday's own: one fire.
    ruled = CalendarSchedule(daily("09:00", "Europe/Berlin"), weekends(), NEXT)
    assert ruled.preview(3, utc("2030-06-07T08:00:00")) == [
        utc("2030-06-10T07:00:00"),  # Mon (Fri 7th's 07:00Z is not after 08:00Z)
        utc("2030-06-11T07:00:00"),
        utc("2030-06-12T07:00:00"),
    ]
    # Asked from Sunday, Saturday's moved occurrence (before the instant) still comes next.
    assert ruled.next_after(utc("2030-06-09T12:00:00")) == utc("2030-06-10T07:00:00")


def test_previous_drops_occurrences_moved_to_before_the_instant() -> None:
    ruled = CalendarSchedule(daily("09:00", "Europe/Berlin"), weekends(), PREVIOUS)
    # From Friday noon: the weekend moves back to Friday 09:00, already past; Monday next.
    assert ruled.next_after(utc("2030-06-07T10:00:00")) == utc("2030-06-10T07:00:00")
    assert ruled.next_after(utc("2030-06-07T06:00:00")) == utc("2030-06-07T07:00:00")


def test_next_on_a_dst_gap_closed_day_moves_to_the_nominal_time() -> None:
    # Europe/Berlin springs forward on Sunday 2031-03-30, 02:00 CET -> 03:00 CEST. Weekend is
    # Friday and Saturday; the Sunday is closed explicitly.
    cal = build_calendar(weekend=[5, 6], dates=[{"date": "2031-03-30", "reason": "Maintenance"}])
    base = daily("02:30", "Europe/Berlin")
    after = utc("2031-03-26T12:00:00")
    # SKIP: Thu 27 02:30 CET = 01:30Z; Fri, Sat the same; Sunday's 02:30 is in the gap and
    # fires an hour later, 03:30 CEST = 01:30Z; Monday 02:30 CEST = 00:30Z.
    skipped = CalendarSchedule(base, cal, SKIP).preview(5, after)
    assert skipped == [
        utc("2031-03-27T01:30:00"),
        utc("2031-03-28T01:30:00"),
        utc("2031-03-29T01:30:00"),
        utc("2031-03-30T01:30:00"),
        utc("2031-03-31T00:30:00"),
    ]
    assert [CalendarSchedule(base, cal, SKIP).closed_reason(f) for f in skipped] == [
        None,
        "weekend",
        "weekend",
        "Maintenance",
        None,
    ]
    # NEXT: Fri, Sat and Sun move to Monday 02:30 CEST (no gap there) = 00:30Z, Monday's own.
    assert CalendarSchedule(base, cal, NEXT).preview(3, after) == [
        utc("2031-03-27T01:30:00"),
        utc("2031-03-31T00:30:00"),
        utc("2031-04-01T00:30:00"),
    ]
    # PREVIOUS: they move back to Thursday 02:30 CET = 01:30Z, Thursday's own.
    assert CalendarSchedule(base, cal, PREVIOUS).preview(3, after) == [
        utc("2031-03-27T01:30:00"),
        utc("2031-03-31T00:30:00"),
        utc("2031-04-01T00:30:00"),
    ]


def test_moving_onto_a_dst_gap_day_reads_the_time_in_the_gap() -> None:
    base = daily("02:30", "Europe/Berlin")
    after = utc("2031-03-28T12:00:00")
    # Only Saturday closed: Saturday 02:30 moves to Sunday 02:30, inside the gap, so it fires
    # at 03:30 CEST = 01:30Z, the same instant as Sunday's own.
    saturday = build_calendar(weekend=[6])
    assert CalendarSchedule(base, saturday, NEXT).preview(2, after) == [
        utc("2031-03-30T01:30:00"),
        utc("2031-03-31T00:30:00"),
    ]
    # Only Monday closed: Monday 02:30 moves back to the gap day the same way (Saturday 02:30
    # CET is 01:30Z too).
    monday = build_calendar(weekend=[1])
    assert CalendarSchedule(base, monday, PREVIOUS).preview(3, after) == [
        utc("2031-03-29T01:30:00"),
        utc("2031-03-30T01:30:00"),
        utc("2031-04-01T00:30:00"),
    ]


def test_moving_onto_a_repeated_time_fires_at_its_first_occurrence() -> None:
    # New York falls back on Sunday 2031-11-02 (02:00 EDT -> 01:00 EST): 01:30 happens twice,
    # first at 05:30Z (EDT). Saturday's 01:30 (05:30Z) moves to Sunday's first 01:30.
    ruled = CalendarSchedule(daily("01:30", "America/New_York"), build_calendar(weekend=[6]), NEXT)
    assert ruled.preview(3, utc("2031-10-31T12:00:00")) == [
        utc("2031-11-02T05:30:00"),
        utc("2031-11-03T06:30:00"),  # Monday 01:30 EST
        utc("2031-11-04T06:30:00"),
    ]


def test_bounds_apply_to_the_fire_instants() -> None:
    start, end = utc("2030-06-09T00:00:00"), utc("2030-06-14T08:00:00")
    base = daily("09:00", "UTC", start_at=start, end_at=end)
    # Saturday June 8 is before the start, but it moves to Monday 10th, inside: it fires.
    # Friday 14th 09:00 is past the end.
    ruled = CalendarSchedule(base, weekends(), NEXT)
    assert ruled.preview(10, utc("2030-06-01T00:00:00")) == [
        utc(f"2030-06-{day}T09:00:00") for day in (10, 11, 12, 13)
    ]
    assert ruled.first_fire(utc("2030-06-01T00:00:00")) == utc("2030-06-10T09:00:00")
    # PREVIOUS: Sat 15th / Sun 16th would move to Friday 14th 09:00, after the end.
    back = CalendarSchedule(daily("09:00", "UTC", end_at=end), weekends(), PREVIOUS)
    assert back.preview(10, utc("2030-06-12T12:00:00")) == [utc("2030-06-13T09:00:00")]


def test_once_schedules_move_too() -> None:
    once = Schedule.parse("once", "2030-06-08T09:00:00", "Europe/Berlin")  # a Saturday
    assert CalendarSchedule(once, weekends(), NEXT).first_fire(utc("2030-07-01T00:00:00")) == utc(
        "2030-06-10T07:00:00"
    )
    assert CalendarSchedule(once, weekends(), PREVIOUS).once_instant() == utc("2030-06-07T07:00:00")
    assert CalendarSchedule(once, weekends(), SKIP).first_fire(utc("2030-01-01T00:00:00")) == utc(
        "2030-06-08T07:00:00"
    )
    assert CalendarSchedule(once, weekends(), NEXT).next_after(utc("2030-06-09T00:00:00")) == utc(
        "2030-06-10T07:00:00"
    )


def test_interval_schedules_move_by_local_time() -> None:
    base = Schedule.parse("interval", "7h", "UTC", start_at=utc("2030-06-07T00:00:00"))
    ruled = CalendarSchedule(base, weekends(), NEXT)
    fires = ruled.preview(12, utc("2030-06-07T00:00:00"))
    # Friday 07, 14, 21; Sat 04, 11, 18; Sun 01, 08, 15, 22; Mon 05, 12, 19 -> Monday has its
    # own 05, 12, 19 and the weekend's 01, 04, 08, 11, 15, 18, 22.
    monday = [1, 4, 5, 8, 11, 12, 15, 18, 19, 22]
    assert fires == [utc(f"2030-06-07T{h:02d}:00:00") for h in (7, 14, 21)] + [
        utc(f"2030-06-10T{h:02d}:00:00") for h in monday[:9]
    ]


def test_a_cron_every_five_minutes_with_next_is_fast_enough() -> None:
    base = Schedule.parse("cron", "*/5 * * * *", "Europe/Berlin")
    ruled = CalendarSchedule(base, weekends(), NEXT)
    fires = ruled.preview(300, utc("2030-06-07T21:00:00"))  # Friday 23:00 CEST
    assert fires[0] == utc("2030-06-07T21:05:00")
    # Friday 23:05 .. 23:55 CEST are the first 11; the weekend's all move to Monday, whose
    # first is 00:00 CEST.
    assert fires[11] == utc("2030-06-09T22:00:00")
    assert len(set(fires)) == 300 and fires == sorted(fires)


# ---------------------------------------------------------------------- BD expressions


def test_business_day_expressions() -> None:
    bd1 = business_day_schedule("BD1 09:00", germany(), "Europe/Berlin")
    # Dec 1, 2027 is a Wednesday; Jan 3, 2028 the first after New Year's Saturday; Feb 1 Tue.
    assert bd1.preview(3, utc("2027-11-15T00:00:00")) == [
        utc("2027-12-01T08:00:00"),
        utc("2028-01-03T08:00:00"),
        utc("2028-02-01T08:00:00"),
    ]
    closed = build_calendar(country="DE", subdivision="BY", dates=["2031-08-29"])
    bdl = business_day_schedule("BDL 17:00", closed, "Europe/Berlin")
    # Aug 2031 ends Sat/Sun with Friday the 29th closed: Thursday 28th 17:00 CEST.
    assert bdl.next_after(utc("2031-08-01T00:00:00")) == utc("2031-08-28T15:00:00")
    bd2 = business_day_schedule("bd2 14:30,09:00", bavaria(), "UTC")
    assert bd2.preview(3, utc("2028-01-01T00:00:00")) == [
        utc("2028-01-04T09:00:00"),
        utc("2028-01-04T14:30:00"),
        utc("2028-02-02T09:00:00"),
    ]
    assert is_business_day_expression(" BD3 09:00") and is_business_day_expression("bdx")
    assert not is_business_day_expression("1,15 09:00") and not is_business_day_expression(None)
    recurrence = parse_business_day_expression("BDL 17:00", germany())
    assert recurrence.elapsed is False
    # A six-day week has up to 27 business days in a month.
    assert parse_business_day_expression("BD27 08:00", build_calendar(weekend=[7])).ordinal == 27


@pytest.mark.parametrize(
    "expression",
    [
        "BD0 09:00",
        "BD24 09:00",
        "BD40 09:00",
        "BDX 09:00",
        "BD1",
        "BD 09:00",
        "BD1 9am",
        "BD-1 9:00",
    ],
)
def test_bad_business_day_expressions(expression: str) -> None:
    with pytest.raises(ValidationError) as error:
        business_day_schedule(expression, germany(), "UTC")
    assert field_of(error) == "schedule_expression"


def test_business_day_schedule_validates_like_schedule_parse() -> None:
    with pytest.raises(ValidationError) as error:
        business_day_schedule("BD1 09:00", germany(), "Mars/Olympus")
    assert field_of(error) == "schedule_timezone"
    with pytest.raises(ValidationError) as error:
        business_day_schedule(
            "BD1 09:00",
            germany(),
            start_at=utc("2030-01-02T00:00:00"),
            end_at=utc("2030-01-01T00:00:00"),
        )
    assert field_of(error) == "schedule_end_at"


# ---------------------------------------------------------------------- bad input


def ics_text(*events: tuple[str, str, str]) -> str:
    body = "".join(
        f"BEGIN:VEVENT\r\nUID:{i}\r\nDTSTART;VALUE=DATE:{start}\r\nDTEND;VALUE=DATE:{end}\r\n"
        f"SUMMARY:{summary}\r\nEND:VEVENT\r\n"
        for i, (start, end, summary) in enumerate(events)
    )
    return f"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\n{body}END:VCALENDAR\r\n"


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"country": "XX"}, "holidays.country"),
        ({"country": "Germany"}, "holidays.country"),
        ({"country": 49}, "holidays.country"),
        ({"country": "DE", "subdivision": "ZZ"}, "holidays.subdivision"),
        ({"subdivision": "BY"}, "holidays.subdivision"),
        ({"country": "DE", "categories": ["bank"]}, "holidays.categories"),
        ({"weekend": [1, 2, 3, 4, 5, 6, 7]}, "weekend"),
        ({"weekend": [0]}, "weekend"),
        ({"weekend": [True]}, "weekend"),
        ({"weekend": "6,7"}, "weekend"),
        ({"dates": ["2030-02-30"]}, "dates"),
        ({"dates": ["20300101"]}, "dates"),
        ({"dates": [{"date": "2030-01-01", "reason": ""}]}, "dates"),
        ({"dates": [{"date": "2030-01-01", "why": "x"}]}, "dates"),
        ({"dates": ["2030-01-01", {"date": "2030-01-01", "reason": "other"}]}, "dates"),
        ({"dates": ["2030-01-01"] * 10_001}, "dates"),
        ({"ics": "not a calendar"}, "ics"),
        ({"ics": "BEGIN:VEVENT\r\nEND:VEVENT\r\n"}, "ics"),
        ({"ics": ics_text(("20300105", "20300101", "Backwards"))}, "ics"),
        ({"ics": ics_text(("2030015", "20300101", "Bad date"))}, "ics"),
        ({"ics": "X" * 1_000_001}, "ics"),
        (
            {
                "ics": "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nDTSTART;VALUE=DATE:20300101\r\n"
                "RRULE:FREQ=YEARLY\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
            },
            "ics",
        ),
    ],
)
def test_bad_calendar_input(arguments: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as error:
        build_calendar(**arguments)  # type: ignore[arg-type]
    assert field_of(error) == field


def weekdays_between(first: date, last: date) -> list[str]:
    days = (first + timedelta(days=i) for i in range((last - first).days + 1))
    return [day.isoformat() for day in days if day.isoweekday() <= 5]


def test_a_calendar_closed_every_day_never_opens() -> None:
    # Every weekday of 2000 and 2001 listed, on top of the weekend.
    with pytest.raises(ValidationError) as error:
        build_calendar(dates=weekdays_between(date(2000, 1, 1), date(2001, 12, 31)))
    assert field_of(error) == "calendar" and "never opens" in error.value.message
    # The same far from 2000 and from any reference: found among the listed dates.
    with pytest.raises(ValidationError) as error:
        build_calendar(dates=weekdays_between(date(2044, 3, 1), date(2045, 6, 30)))
    assert field_of(error) == "calendar"
    # Closed for a year minus a day is allowed: it still opens once a year.
    year = weekdays_between(date(2044, 3, 1), date(2045, 2, 27))
    assert build_calendar(dates=year).next_business_day(date(2044, 3, 1), include=True) == date(
        2045, 2, 28
    )
    # A six-day weekend whose one open day is listed every week: never opens.
    sundays = [(date(2030, 1, 6) + timedelta(weeks=i)).isoformat() for i in range(110)]
    with pytest.raises(ValidationError) as error:
        build_calendar(weekend=[1, 2, 3, 4, 5, 6], dates=sundays, reference=date(2030, 1, 1))
    assert field_of(error) == "calendar"


def test_calendar_rule_names() -> None:
    assert parse_calendar_rule(" Next_Business_Day ") is NEXT
    assert parse_calendar_rule("skip") is SKIP
    with pytest.raises(ValidationError) as error:
        parse_calendar_rule("nearest", field="calendar_rule")
    assert field_of(error) == "calendar_rule"


# ---------------------------------------------------------------------- properties
#
# The oracle decides business days from `holidays` and the weekday, lists the wall-clock times
# each schedule names, places them in UTC by trying the zone's offsets (the first of two
# readings; inside a gap, the offset before it), moves closed days' times by walking the days,
# and keeps the distinct instants within the bounds.


@dataclass(frozen=True)
class CalendarSpec:
    name: str
    weekend: frozenset[int]
    country: str | None = None
    subdivision: str | None = None


CALENDARS = (
    CalendarSpec("DE-BY", frozenset({6, 7}), "DE", "BY"),
    CalendarSpec("US", frozenset({6, 7}), "US"),
    CalendarSpec("GB-ENG", frozenset({6, 7}), "GB", "ENG"),
    CalendarSpec("JP", frozenset({6, 7}), "JP"),
    CalendarSpec("Fri-Sat + listed", frozenset({5, 6})),
)
ZONES = ("Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Tokyo")
TIMES = ("02:30", "02:15", "01:30", "00:00", "09:00", "23:30", "12:45")
FIRST = date(2025, 1, 1)
YEARS = 10
# Days near the zones' transitions, where moving and reading times is hardest.
TRANSITION_DAYS = (
    date(2031, 3, 30),  # Berlin springs forward (a Sunday)
    date(2031, 10, 26),  # Berlin falls back
    date(2029, 3, 11),  # New York springs forward
    date(2027, 11, 7),  # New York falls back
    date(2030, 10, 6),  # Lord Howe: 02:00 -> 02:30
    date(2030, 4, 7),  # Lord Howe: 02:00 -> 01:30
)


@cache
def holiday_table(country: str, subdivision: str | None) -> holidays.HolidayBase:
    return holidays.country_holidays(country, subdiv=subdivision)


def oracle_open(spec: CalendarSpec, listed: frozenset[date], day: date) -> bool:
    if day.isoweekday() in spec.weekend or day in listed:
        return False
    return spec.country is None or day not in holiday_table(spec.country, spec.subdivision)


def reading(zone: ZoneInfo, instant: datetime) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


def offset_at(zone: ZoneInfo, instant: datetime) -> timedelta:
    value = instant.astimezone(zone).utcoffset()
    assert value is not None
    return value


def oracle_instant(local: datetime, zone: ZoneInfo) -> datetime:
    probe = local.replace(tzinfo=UTC)
    offsets = {offset_at(zone, probe + timedelta(hours=h)) for h in (-15, -7, 1, 13)}
    shown = [probe - o for o in offsets if reading(zone, probe - o) == local]
    if shown:
        return min(shown)
    # Never shown: a gap. The instant 15 hours before `local`-as-UTC reads as a time before
    # the gap (offsets lie within -12h..+14h), so its offset is the one before the gap.
    return probe - offset_at(zone, probe - timedelta(hours=15))


@dataclass(frozen=True)
class ScheduleSpec:
    kind: str  # daily / weekly / monthly / business
    expression: str
    times: tuple[time, ...]
    picks: Callable[[date, Callable[[date], bool]], bool]


def at(text: str) -> time:
    hour, minute = text.split(":")
    return time(int(hour), int(minute))


def nth_open(day: date, n: int, is_open: Callable[[date], bool]) -> bool:
    length = gregorian.monthrange(day.year, day.month)[1]
    opened = [
        date(day.year, day.month, i)
        for i in range(1, length + 1)
        if is_open(date(day.year, day.month, i))
    ]
    if not opened:
        return False
    return day == (opened[-1] if n == 0 else opened[n - 1] if n <= len(opened) else None)


def every_day(day: date, is_open: Callable[[date], bool]) -> bool:
    return True


@st.composite
def schedules(draw: st.DrawFn) -> ScheduleSpec:
    chosen = sorted(set(draw(st.lists(st.sampled_from(TIMES), min_size=1, max_size=2))))
    times = ",".join(chosen)
    parsed = tuple(at(t) for t in chosen)
    kind = draw(st.sampled_from(("daily", "weekly", "monthly", "business")))
    if kind == "daily":
        return ScheduleSpec(kind, times, parsed, every_day)
    if kind == "weekly":
        weekdays = frozenset(draw(st.lists(st.integers(1, 7), min_size=1, max_size=3)))
        text = ",".join(str(w) for w in sorted(weekdays))
        return ScheduleSpec(
            kind, f"{text} {times}", parsed, lambda day, is_open: day.isoweekday() in weekdays
        )
    if kind == "monthly":
        monthdays = draw(st.sampled_from(((1,), (1, 15), (0,), (30, 0), (31,))))
        text = ",".join("L" if m == 0 else str(m) for m in monthdays)

        def monthly(day: date, is_open: Callable[[date], bool]) -> bool:
            last = gregorian.monthrange(day.year, day.month)[1]
            return day.day in monthdays or (0 in monthdays and day.day == last)

        return ScheduleSpec(kind, f"{text} {times}", parsed, monthly)
    n = draw(st.sampled_from((1, 3, 0)))
    text = "BDL" if n == 0 else f"BD{n}"
    return ScheduleSpec(
        kind, f"{text} {times}", parsed, lambda day, is_open: nth_open(day, n, is_open)
    )


def oracle_fires(
    spec: ScheduleSpec,
    cal: CalendarSpec,
    listed: frozenset[date],
    zone: ZoneInfo,
    rule: CalendarRule,
    days: tuple[date, date],
    bounds: tuple[datetime | None, datetime | None],
) -> list[datetime]:
    def is_open(day: date) -> bool:
        return oracle_open(cal, listed, day)

    def walk(day: date, step: int) -> date:
        day += timedelta(days=step)
        while not is_open(day):
            day += timedelta(days=step)
        return day

    fires: set[datetime] = set()
    day = days[0]
    while day <= days[1]:
        if spec.picks(day, is_open):
            target = day
            if not is_open(day) and rule is not SKIP:
                target = walk(day, 1 if rule is NEXT else -1)
            for clock in spec.times:
                fires.add(oracle_instant(datetime.combine(target, clock), zone))
        day += timedelta(days=1)
    low, high = bounds
    return sorted(f for f in fires if (low is None or f >= low) and (high is None or f <= high))


PROPERTY_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.mark.parametrize("rule", list(CalendarRule))
@PROPERTY_SETTINGS
@given(
    spec=schedules(),
    cal=st.sampled_from(CALENDARS),
    zone_name=st.sampled_from(ZONES),
    first=st.one_of(
        st.integers(0, 365 * YEARS).map(lambda n: FIRST + timedelta(days=n)),
        st.sampled_from(TRANSITION_DAYS).flatmap(
            lambda day: st.integers(-3, 1).map(lambda n: day + timedelta(days=n))
        ),
    ),
    hour=st.integers(0, 23),
    listed_offsets=st.lists(st.integers(-10, 70), max_size=12),
    bounded=st.tuples(st.booleans(), st.integers(-5, 20), st.integers(10, 50)),
)
@example(  # Saturday's 01:30 onto New York's fall-back Sunday: its first 01:30
    spec=ScheduleSpec("daily", "01:30", (time(1, 30),), every_day),
    cal=CALENDARS[4],
    zone_name="America/New_York",
    first=date(2027, 11, 5),
    hour=12,
    listed_offsets=[],
    bounded=(False, 0, 0),
)
@example(  # the same on Berlin's fall-back Sunday, 02:30
    spec=ScheduleSpec("daily", "02:30", (time(2, 30),), every_day),
    cal=CALENDARS[4],
    zone_name="Europe/Berlin",
    first=date(2031, 10, 24),
    hour=0,
    listed_offsets=[],
    bounded=(False, 0, 0),
)
@example(  # Lord Howe falls back half an hour: 01:30 happens twice
    spec=ScheduleSpec("daily", "01:30,02:15", (time(1, 30), time(2, 15)), every_day),
    cal=CALENDARS[4],
    zone_name="Australia/Lord_Howe",
    first=date(2030, 4, 4),
    hour=0,
    listed_offsets=[],
    bounded=(False, 0, 0),
)
@example(  # a Sunday closed on Berlin's spring-forward day, Friday and Saturday weekend
    spec=ScheduleSpec("daily", "02:30", (time(2, 30),), every_day),
    cal=CALENDARS[4],
    zone_name="Europe/Berlin",
    first=date(2031, 3, 27),
    hour=0,
    listed_offsets=[3],
    bounded=(False, 0, 0),
)
def test_rules_match_the_oracle(
    rule: CalendarRule,
    spec: ScheduleSpec,
    cal: CalendarSpec,
    zone_name: str,
    first: date,
    hour: int,
    listed_offsets: list[int],
    bounded: tuple[bool, int, int],
) -> None:
    zone = ZoneInfo(zone_name)
    # The custom calendar closes some listed days near the window (half of them through an
    # iCalendar import); the country calendars are the package's holidays alone.
    listed = (
        frozenset(first + timedelta(days=n) for n in listed_offsets)
        if cal.country is None
        else frozenset()
    )
    explicit = sorted(day for i, day in enumerate(sorted(listed)) if i % 2 == 0)
    imported = sorted(day for i, day in enumerate(sorted(listed)) if i % 2 == 1)
    calendar = build_calendar(
        weekend=sorted(cal.weekend),
        country=cal.country,
        subdivision=cal.subdivision,
        dates=[day.isoformat() for day in explicit],
        ics=ics_text(
            *(
                (day.strftime("%Y%m%d"), (day + timedelta(days=1)).strftime("%Y%m%d"), "Closed")
                for day in imported
            )
        ),
    )
    after = oracle_instant(datetime.combine(first, time(hour)), zone)
    start = end = None
    if bounded[0]:
        start = after + timedelta(days=bounded[1])
        end = start + timedelta(days=bounded[2])
    if spec.kind == "business":
        base = business_day_schedule(
            spec.expression, calendar, zone_name, start_at=start, end_at=end
        )
    else:
        base = Schedule.parse(spec.kind, spec.expression, zone_name, start_at=start, end_at=end)
    ruled = CalendarSchedule(base, calendar, rule)

    # Every fire up to 60 days on; the oracle enumerates days well around that window.
    cutoff = after + timedelta(days=60)
    window = (first - timedelta(days=45), first + timedelta(days=120))
    expected = [
        f
        for f in oracle_fires(spec, cal, listed, zone, rule, window, (start, end))
        if after < f <= cutoff
    ]
    actual: list[datetime] = []
    for fire in ruled.occurrences(after):
        if fire > cutoff:
            break
        actual.append(fire)
    assert actual == expected
    if rule is SKIP:
        closed = [f for f in actual if ruled.closed_reason(f) is not None]
        assert closed == [
            f for f in actual if not oracle_open(cal, listed, reading(zone, f).date())
        ]
    else:
        assert all(ruled.closed_reason(f) is None for f in actual)
