"""Schedule choices that could go more than one way, pinned down (docs/decisions.md)."""

from __future__ import annotations

from datetime import UTC, datetime

from apflow_server.schedules import Schedule

JAN_1 = datetime(2024, 1, 1, tzinfo=UTC)  # a Monday


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_vixie_star_prefixed_day_field_means_both_must_match() -> None:
    # */2 starts with "*": Vixie cron treats it as unrestricted, so odd days AND Mondays.
    schedule = Schedule.parse("cron", "0 9 */2 * 1", "UTC")
    assert schedule.preview(4, JAN_1) == [
        utc("2024-01-01T09:00:00+00:00"),
        utc("2024-01-15T09:00:00+00:00"),
        utc("2024-01-29T09:00:00+00:00"),
        utc("2024-02-05T09:00:00+00:00"),
    ]


def test_vixie_both_restricted_means_either_matches() -> None:
    schedule = Schedule.parse("cron", "0 9 1,15 * 5", "UTC")  # the 1st, the 15th, or Fridays
    assert schedule.preview(4, JAN_1) == [
        utc("2024-01-01T09:00:00+00:00"),
        utc("2024-01-05T09:00:00+00:00"),
        utc("2024-01-12T09:00:00+00:00"),
        utc("2024-01-15T09:00:00+00:00"),
    ]


def test_a_once_before_its_start_bound_never_fires() -> None:
    schedule = Schedule.parse(
        "once", "2024-06-01T12:00:00Z", "UTC", start_at=utc("2024-07-01T00:00:00+00:00")
    )
    assert schedule.first_fire(JAN_1) is None
    inside = Schedule.parse(
        "once", "2024-07-02T12:00:00Z", "UTC", start_at=utc("2024-07-01T00:00:00+00:00")
    )
    assert inside.first_fire(JAN_1) == utc("2024-07-02T12:00:00+00:00")


def test_hourly_cron_across_a_half_hour_shift_fires_when_the_clock_shows_the_minute() -> None:
    # Lord Howe springs forward 02:00 +10:30 -> 02:30 +11:00 on 2024-10-06: the clock never
    # shows 02:00, so an hourly job has one 90-minute interval there (documented choice).
    schedule = Schedule.parse("cron", "0 * * * *", "Australia/Lord_Howe")
    assert schedule.preview(3, utc("2024-10-05T14:00:00+00:00")) == [
        utc("2024-10-05T14:30:00+00:00"),  # 01:00 +10:30
        utc("2024-10-05T16:00:00+00:00"),  # 03:00 +11:00
        utc("2024-10-05T17:00:00+00:00"),
    ]


def test_a_range_of_one_value_means_that_value() -> None:
    # croniter 7 expands "a-a" to "*": without care, "0 9 * * 2-2" would fire every day.
    schedule = Schedule.parse("cron", "0 9 * * 2-2", "UTC")
    assert schedule.preview(3, JAN_1) == [
        utc("2024-01-02T09:00:00+00:00"),
        utc("2024-01-09T09:00:00+00:00"),
        utc("2024-01-16T09:00:00+00:00"),
    ]
    minutes = Schedule.parse("cron", "5-5,7 9-9 * * *", "UTC")
    assert minutes.preview(3, JAN_1) == [
        utc("2024-01-01T09:05:00+00:00"),
        utc("2024-01-01T09:07:00+00:00"),
        utc("2024-01-02T09:05:00+00:00"),
    ]
