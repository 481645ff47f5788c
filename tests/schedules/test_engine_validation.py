"""Every bad schedule input is refused with a ValidationError naming the offending field."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from apflow_server.core.compute import Budget
from apflow_server.core.errors import ValidationError
from apflow_server.schedules import Schedule

EXPR = "schedule_expression"

BAD_EXPRESSIONS = [
    # daily
    pytest.param("daily", "", id="daily-empty"),
    pytest.param("daily", "   ", id="daily-blank"),
    pytest.param("daily", "9h00", id="daily-not-hh-mm"),
    pytest.param("daily", "0900", id="daily-no-colon"),
    pytest.param("daily", "09:0", id="daily-one-digit-minute"),
    pytest.param("daily", "24:00", id="daily-24-00"),
    pytest.param("daily", "09:60", id="daily-minute-60"),
    pytest.param("daily", "-1:00", id="daily-negative-hour"),
    pytest.param("daily", "09:00,", id="daily-trailing-comma"),
    pytest.param("daily", "09:00,25:00", id="daily-second-time-bad"),
    pytest.param("daily", "09:00 17:30", id="daily-space-separated"),
    # weekly
    pytest.param("weekly", "0 09:00", id="weekly-day-0"),
    pytest.param("weekly", "8 09:00", id="weekly-day-8"),
    pytest.param("weekly", "1,8 09:00", id="weekly-day-8-in-list"),
    pytest.param("weekly", "L 09:00", id="weekly-L"),
    pytest.param("weekly", "5-1 09:00", id="weekly-reversed-range"),
    pytest.param("weekly", "1-8 09:00", id="weekly-range-out-of-bounds"),
    pytest.param("weekly", "1--5 09:00", id="weekly-double-dash"),
    pytest.param("weekly", "mon 09:00", id="weekly-day-name"),
    pytest.param("weekly", "1-5", id="weekly-no-time"),
    pytest.param("weekly", "1-5 24:00", id="weekly-bad-time"),
    pytest.param("weekly", "1-5 09:00 17:00", id="weekly-three-parts"),
    # monthly
    pytest.param("monthly", "32 09:00", id="monthly-day-32"),
    pytest.param("monthly", "0 09:00", id="monthly-day-0"),
    pytest.param("monthly", "15-1 09:00", id="monthly-reversed-range"),
    pytest.param("monthly", "X 09:00", id="monthly-garbage-day"),
    pytest.param("monthly", "1,15", id="monthly-no-time"),
    pytest.param("monthly", "L 9:75", id="monthly-bad-time"),
    # cron
    pytest.param("cron", "not a cron at all", id="cron-garbage-five-words"),
    pytest.param("cron", "every day", id="cron-garbage"),
    pytest.param("cron", "0 9 * *", id="cron-four-fields"),
    pytest.param("cron", "0 9 * * * 0 2024", id="cron-seven-fields"),
    pytest.param("cron", "61 * * * *", id="cron-minute-61"),
    pytest.param("cron", "0 25 * * *", id="cron-hour-25"),
    pytest.param("cron", "0 9 32 * *", id="cron-dom-32"),
    pytest.param("cron", "0 9 * 13 *", id="cron-month-13"),
    pytest.param("cron", "0 9 * * 1 61", id="cron-seconds-61"),
    pytest.param("cron", "@fortnightly", id="cron-unknown-alias"),
    pytest.param("cron", "0 0 31 2 *", id="cron-never-fires-feb-31"),
    pytest.param("cron", "0 0 30 2 *", id="cron-never-fires-feb-30"),
    pytest.param("cron", "", id="cron-empty"),
    # interval
    pytest.param("interval", "0", id="interval-zero"),
    pytest.param("interval", "0s", id="interval-zero-seconds"),
    pytest.param("interval", "0m", id="interval-zero-minutes"),
    pytest.param("interval", "-5", id="interval-negative"),
    pytest.param("interval", "-5m", id="interval-negative-minutes"),
    pytest.param("interval", "abc", id="interval-garbage"),
    pytest.param("interval", "5x", id="interval-unknown-unit"),
    pytest.param("interval", "1.5h", id="interval-fraction"),
    pytest.param("interval", "", id="interval-empty"),
    # once
    pytest.param("once", "not-a-date", id="once-garbage"),
    pytest.param("once", "2024-13-01T09:00:00", id="once-month-13"),
    pytest.param("once", "2024-02-30T09:00:00Z", id="once-feb-30"),
    pytest.param("once", "2025-02-29T09:00:00Z", id="once-feb-29-non-leap"),
    pytest.param("once", "", id="once-empty"),
]


@pytest.mark.parametrize(("schedule_type", "expression"), BAD_EXPRESSIONS)
def test_bad_expression(schedule_type: str, expression: str) -> None:
    with pytest.raises(ValidationError) as info:
        Schedule.parse(schedule_type, expression, "UTC")
    assert info.value.field == EXPR


@pytest.mark.parametrize("schedule_type", ["hourly", "", "cronjob", "daily weekly"])
def test_bad_schedule_type(schedule_type: str) -> None:
    with pytest.raises(ValidationError) as info:
        Schedule.parse(schedule_type, "09:00", "UTC")
    assert info.value.field == "schedule_type"


@pytest.mark.parametrize("schedule_type", ["DAILY", " daily "])
def test_schedule_type_is_case_and_space_insensitive(schedule_type: str) -> None:
    Schedule.parse(schedule_type, "09:00", "UTC")


@pytest.mark.parametrize("zone", ["Mars/Base", "", "   ", "Europe/Nowhere", "../etc/passwd"])
def test_bad_zone(zone: str) -> None:
    with pytest.raises(ValidationError) as info:
        Schedule.parse("daily", "09:00", zone)
    assert info.value.field == "schedule_timezone"


def test_bad_zone_is_checked_for_every_type() -> None:
    for schedule_type, expression in [
        ("once", "2024-06-01T12:00:00Z"),
        ("interval", "1h"),
        ("cron", "0 9 * * *"),
        ("weekly", "1 09:00"),
        ("monthly", "1 09:00"),
    ]:
        with pytest.raises(ValidationError) as info:
            Schedule.parse(schedule_type, expression, "Mars/Base")
        assert info.value.field == "schedule_timezone", schedule_type


JAN = datetime(2024, 1, 1, tzinfo=UTC)
FEB = datetime(2024, 2, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("start_at", "end_at"),
    [
        pytest.param(FEB, JAN, id="end-before-start"),
        pytest.param(JAN, JAN, id="end-equals-start"),
    ],
)
def test_end_not_after_start(start_at: datetime, end_at: datetime) -> None:
    with pytest.raises(ValidationError) as info:
        Schedule.parse("daily", "09:00", "UTC", start_at=start_at, end_at=end_at)
    assert info.value.field == "schedule_end_at"


def test_naive_start_at() -> None:
    with pytest.raises(ValidationError) as info:
        Schedule.parse("daily", "09:00", "UTC", start_at=datetime(2024, 1, 1, 9, 0))
    assert info.value.field == "schedule_start_at"


def test_naive_end_at() -> None:
    with pytest.raises(ValidationError) as info:
        Schedule.parse("daily", "09:00", "UTC", end_at=datetime(2024, 1, 1, 9, 0))
    assert info.value.field == "schedule_end_at"


def test_naive_start_at_for_interval() -> None:
    with pytest.raises(ValidationError) as info:
        Schedule.parse("interval", "1h", "UTC", start_at=datetime(2024, 1, 1, 9, 0))
    assert info.value.field == "schedule_start_at"


def test_naive_after_is_refused() -> None:
    schedule = Schedule.parse("daily", "09:00", "UTC")
    with pytest.raises(ValidationError):
        schedule.next_after(datetime(2024, 1, 1, 9, 0))


def test_validation_error_is_reported_with_its_field_in_data() -> None:
    with pytest.raises(ValidationError) as info:
        Schedule.parse("daily", "24:00", "UTC")
    assert info.value.data == {"field": EXPR}


@pytest.mark.parametrize(
    ("schedule_type", "expression"),
    [
        pytest.param("daily", "9:05", id="daily-one-digit-hour"),
        pytest.param("daily", "00:00,23:59", id="daily-bounds"),
        pytest.param("weekly", "1-7 00:00", id="weekly-full-range"),
        pytest.param("weekly", "7 23:59", id="weekly-sunday"),
        pytest.param("monthly", "1-31,L 12:00", id="monthly-full-range"),
        pytest.param("monthly", "l 12:00", id="monthly-lowercase-L"),
        pytest.param("cron", "0 0 29 2 *", id="cron-leap-day-fires"),
        pytest.param("cron", "0 0 31 * *", id="cron-31-fires"),
        pytest.param("cron", "0 9 * * * 30", id="cron-six-fields"),
        pytest.param("cron", "@weekly", id="cron-alias"),
        pytest.param("interval", "1", id="interval-one-second"),
        pytest.param("interval", "1d", id="interval-one-day"),
        pytest.param("once", "2024-02-29T09:00:00", id="once-leap-day"),
    ],
)
def test_edge_expressions_are_accepted(schedule_type: str, expression: str) -> None:
    """The boundaries next to the refused values are valid (so the refusals are specific)."""
    schedule = Schedule.parse(schedule_type, expression, "UTC", anchor_at=JAN)
    assert schedule.next_after(JAN) is not None


def test_a_preview_stops_when_told_to() -> None:
    """A long preview asks between searches whether to go on (the server's compute budget)."""
    schedule = Schedule.parse("cron", "0 0 30 2 1", "Europe/Berlin")
    asked: list[int] = []

    def between_steps() -> None:
        asked.append(1)
        if len(asked) > 3:
            raise ValidationError("count", "over budget")

    with pytest.raises(ValidationError) as refused:
        schedule.preview(1000, datetime(2026, 1, 1, tzinfo=UTC), between_steps=between_steps)
    assert refused.value.field == "count"
    assert len(asked) == 4


def test_the_budget_refuses_once_spent() -> None:
    moments = iter([0.0, 0.5, 1.9, 2.1])
    budget = Budget(2, clock=lambda: next(moments))
    check = budget.checker("count", "ask for fewer fire times")
    check()  # 0.5 s
    check()  # 1.9 s
    with pytest.raises(ValidationError) as spent:
        check()  # 2.1 s
    assert spent.value.field == "count"
    assert "2 s" in spent.value.reason


@pytest.mark.parametrize("expression", ["R * * * *", "0 R * * *", "r(0-29) 9 * * *", "0 9 * * R"])
def test_a_random_cron_field_is_refused_with_a_reason(expression: str) -> None:
    """croniter's R draws a value per iterator: no fixed fire times to preview, export as a
    crontab or CronJob, or fire exactly once."""
    with pytest.raises(ValidationError) as raised:
        Schedule.parse("cron", expression, "UTC")
    assert raised.value.field == "schedule_expression"
    assert "random fields (R) are not supported" in raised.value.reason


@pytest.mark.parametrize("expression", ["0 9 * mar fri", "0 9 * APR-OCT SAT,sun", "@hourly"])
def test_names_with_an_r_are_not_random_fields(expression: str) -> None:
    assert Schedule.parse("cron", expression, "UTC").next_after(datetime(2026, 1, 1, tzinfo=UTC))
