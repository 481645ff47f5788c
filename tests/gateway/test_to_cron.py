"""Schedule → standard cron: every conversion fires exactly when the original does (the next 50
fire times of both, by this service's own engine, in many zones and across DST changes), and
everything cron cannot express is refused with a message saying why."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from apflow_server.core.errors import ValidationError
from apflow_server.schedules import Schedule
from apflow_server.schedules.to_cron import CronConversionError, schedule_to_cron, to_cron

COUNT = 50
ZONES = [
    "UTC",
    "Europe/Paris",
    "America/New_York",
    "America/St_Johns",  # -03:30 / -02:30
    "Australia/Lord_Howe",  # +10:30 / +11:00: a half-hour DST shift
    "Pacific/Auckland",  # southern hemisphere
    "Asia/Kolkata",  # +05:30, no DST
    "Asia/Kathmandu",  # +05:45, no DST
    "Asia/Tokyo",
]
DST_ZONES = {"Europe/Paris", "America/New_York", "America/St_Johns", "Australia/Lord_Howe"}
DST_ZONES |= {"Pacific/Auckland"}
START = datetime(2025, 1, 1, tzinfo=UTC)


@functools.cache
def transitions(zone_name: str, after: datetime = START, count: int = 2) -> list[datetime]:
    """The next `count` instants (to the minute) where the zone's UTC offset changes."""
    zone = ZoneInfo(zone_name)
    found: list[datetime] = []
    moment = after
    offset = moment.astimezone(zone).utcoffset()
    while len(found) < count and moment < after + timedelta(days=800):
        step = moment + timedelta(hours=1)
        if step.astimezone(zone).utcoffset() != offset:
            low, high = moment, step
            while high - low > timedelta(minutes=1):
                middle = low + (high - low) / 2
                if middle.astimezone(zone).utcoffset() == offset:
                    low = middle
                else:
                    high = middle
            found.append(high)
            offset = step.astimezone(zone).utcoffset()
        moment = step
    return found


def afters(zone: str, spread: timedelta) -> list[datetime]:
    """Start points for previews: a plain one, and ones whose 50 fires straddle each of the
    next two offset changes of the zone."""
    return [START] + [when - spread for when in transitions(zone)]


def assert_same_fires(original: Schedule, converted: str, spread: timedelta) -> None:
    cron = Schedule.parse("cron", converted, original.timezone)
    for after in afters(original.timezone, spread):
        want = original.preview(COUNT, after)
        got = cron.preview(COUNT, after)
        assert len(want) == COUNT
        assert got == want, (original.type, original.expression, converted, after)


# ---------------------------------------------------------------------- daily / weekly / monthly

CALENDAR = [
    ("daily", "09:00", "0 9 * * *"),
    ("daily", "00:00", "0 0 * * *"),
    ("daily", "02:30", "30 2 * * *"),  # in the spring-forward gap of many zones
    ("daily", "01:30", "30 1 * * *"),  # repeated at fall-back in many zones
    ("daily", "09:00,09:30,17:00,17:30", "0,30 9,17 * * *"),
    ("daily", "01:15,01:45,02:15,02:45,03:15,03:45", "15,45 1-3 * * *"),
    ("weekly", "1-5 09:00", "0 9 * * 1-5"),
    ("weekly", "6,7 10:15", "15 10 * * 0,6"),
    ("weekly", "7 02:30", "30 2 * * 0"),
    ("weekly", "1,3,5 08:00,20:00", "0 8,20 * * 1,3,5"),
    ("weekly", "1-7 06:05", "5 6 * * 0-6"),
    ("monthly", "1,15 09:00", "0 9 1,15 * *"),
    ("monthly", "31 23:59", "59 23 31 * *"),
    ("monthly", "29,30,31 02:30", "30 2 29-31 * *"),
    ("monthly", "1-5,10 00:00,12:00", "0 0,12 1-5,10 * *"),
]


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize(("kind", "expression", "expected"), CALENDAR)
def test_calendar_schedules_convert_exactly(
    kind: str, expression: str, expected: str, zone: str
) -> None:
    original = Schedule.parse(kind, expression, zone)
    converted = schedule_to_cron(original)
    assert converted == expected
    assert to_cron(kind, expression, zone, target="kubernetes") == expected
    assert_same_fires(original, converted, timedelta(days=3))


def test_all_day_hours_convert_where_the_offset_never_changes() -> None:
    times = ",".join(f"{hour:02d}:10" for hour in range(24))
    for zone in ("UTC", "Asia/Tokyo", "Asia/Kolkata"):
        original = Schedule.parse("daily", times, zone)
        converted = schedule_to_cron(original)
        assert converted == "10 0-23 * * *"
        assert_same_fires(original, converted, timedelta(hours=20))


def test_all_day_hours_are_refused_where_dst_would_make_cron_differ() -> None:
    times = ",".join(f"{hour:02d}:00" for hour in range(24))
    with pytest.raises(CronConversionError, match="every hour of the day"):
        to_cron("daily", times, "Europe/Paris")
    # Why: the cron expression fires twice in the repeated hour at fall-back.
    after = transitions("Europe/Paris")[1] - timedelta(hours=5)
    wall_clock = Schedule.parse("daily", times, "Europe/Paris").preview(10, after)
    elapsed = Schedule.parse("cron", "0 0-23 * * *", "Europe/Paris").preview(10, after)
    assert wall_clock != elapsed


def test_non_grid_time_lists_are_refused_naming_the_extra_times() -> None:
    with pytest.raises(CronConversionError, match=r"09:30, 17:00"):
        to_cron("daily", "09:00,17:30", "UTC")
    with pytest.raises(CronConversionError, match="08:30"):
        to_cron("weekly", "1-5 08:00,09:00,09:30", "UTC")


def test_last_day_of_month_is_refused_for_standard_cron() -> None:
    for expression in ("L 09:00", "1,15,L 18:00"):
        with pytest.raises(CronConversionError, match=r"L \(the last day of the month\)"):
            to_cron("monthly", expression, "UTC")
    with pytest.raises(CronConversionError, match="L"):
        to_cron("monthly", "L 09:00", "UTC", target="kubernetes")


# ---------------------------------------------------------------------- intervals

PERIODS = [60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 604800]


def local_midnight(zone: str) -> datetime:
    return datetime(2025, 1, 6, tzinfo=ZoneInfo(zone)).astimezone(UTC)  # a Monday


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("period", PERIODS)
def test_aligned_intervals_convert_exactly_or_are_refused_for_dst(period: int, zone: str) -> None:
    anchor = local_midnight(zone)
    original = Schedule.parse("interval", str(period), zone, start_at=anchor)
    whole_hours_dst = zone in DST_ZONES
    if period > 3600 and whole_hours_dst:
        with pytest.raises(CronConversionError, match="daylight-saving"):
            schedule_to_cron(original)
        return
    if zone == "Australia/Lord_Howe" and 1800 % period:  # its DST shift is half an hour
        with pytest.raises(CronConversionError, match="changes its UTC offset"):
            schedule_to_cron(original)
        return
    converted = schedule_to_cron(original)
    expected = {
        60: "* * * * *",
        120: "*/2 * * * *",
        300: "*/5 * * * *",
        900: "*/15 * * * *",
        3600: "0 * * * *",
        7200: "0 */2 * * *",
        21600: "0 */6 * * *",
        86400: "0 0 * * *",
        604800: "0 0 * * 1",
    }
    if period in expected:
        assert converted == expected[period]
    spread = timedelta(seconds=period * COUNT // 2)
    assert_same_fires_from(original, converted, anchor, spread)


def assert_same_fires_from(
    original: Schedule, converted: str, anchor: datetime, spread: timedelta
) -> None:
    cron = Schedule.parse("cron", converted, original.timezone)
    for after in afters(original.timezone, spread):
        after = max(after, anchor)
        assert original.preview(COUNT, after) == cron.preview(COUNT, after), (
            original.expression,
            converted,
            after,
        )


@pytest.mark.parametrize(
    ("period", "local", "expected"),
    [
        (900, (10, 7), "7-59/15 * * * *"),  # a shifted grid is still a cron grid
        (600, (0, 3), "3-59/10 * * * *"),
        (3600, (10, 7), "7 * * * *"),
        (1800, (23, 45), "15-59/30 * * * *"),
    ],
)
def test_intervals_on_a_shifted_minute_grid(
    period: int, local: tuple[int, int], expected: str
) -> None:
    for zone in ("UTC", "Europe/Paris", "America/New_York"):
        anchor = datetime(2025, 1, 6, *local, tzinfo=ZoneInfo(zone)).astimezone(UTC)
        original = Schedule.parse("interval", str(period), zone, start_at=anchor)
        converted = schedule_to_cron(original)
        assert converted == expected
        assert_same_fires_from(original, converted, anchor, timedelta(seconds=period * 25))


def test_hour_intervals_shifted_in_a_zone_without_dst() -> None:
    anchor = datetime(2025, 1, 6, 1, 30, tzinfo=ZoneInfo("Asia/Kolkata")).astimezone(UTC)
    original = Schedule.parse("interval", "2h", "Asia/Kolkata", start_at=anchor)
    assert schedule_to_cron(original) == "30 1-23/2 * * *"
    assert_same_fires_from(original, "30 1-23/2 * * *", anchor, timedelta(hours=50))
    daily = Schedule.parse("interval", "1d", "Asia/Tokyo", start_at=anchor)
    assert schedule_to_cron(daily) == "0 5 * * *"  # 01:30 Kolkata is 05:00 Tokyo


def test_the_anchor_can_come_from_the_enabled_grid() -> None:
    anchor = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    assert to_cron("interval", "15m", "UTC", anchor_at=anchor) == "*/15 * * * *"


@pytest.mark.parametrize(
    ("expression", "anchor", "match"),
    [
        ("900", datetime(2025, 1, 6, 10, 7, 30, tzinfo=UTC), "not on a whole minute"),
        ("90s", datetime(2025, 1, 6, tzinfo=UTC), "divide an hour"),
        ("45s", datetime(2025, 1, 6, tzinfo=UTC), "divide an hour"),
        ("5400", datetime(2025, 1, 6, tzinfo=UTC), "divide an hour"),
        ("2400", datetime(2025, 1, 6, tzinfo=UTC), "divide an hour"),
        ("5h", datetime(2025, 1, 6, tzinfo=UTC), "not a whole number of runs per day"),
        ("2d", datetime(2025, 1, 6, tzinfo=UTC), "not a whole number of runs per day"),
    ],
)
def test_misaligned_intervals_are_refused(expression: str, anchor: datetime, match: str) -> None:
    with pytest.raises(CronConversionError, match=match):
        to_cron("interval", expression, "UTC", start_at=anchor)


def test_why_day_intervals_are_refused_in_dst_zones() -> None:
    anchor = datetime(2025, 3, 1, 9, 0, tzinfo=ZoneInfo("Europe/Paris")).astimezone(UTC)
    with pytest.raises(CronConversionError, match="Europe/Paris changes its UTC offset"):
        to_cron("interval", "1d", "Europe/Paris", start_at=anchor)
    # The naive conversion drifts by an hour across the spring change.
    interval = Schedule.parse("interval", "1d", "Europe/Paris", start_at=anchor)
    naive = Schedule.parse("cron", "0 9 * * *", "Europe/Paris")
    assert interval.preview(40, anchor) != naive.preview(40, anchor)


def test_an_interval_without_an_anchor_is_refused() -> None:
    with pytest.raises(CronConversionError, match="not fixed yet"):
        to_cron("interval", "15m", "UTC")


# ---------------------------------------------------------------------- cron and once

CRONS = [
    ("0 9 * * 1-5", "0 9 * * 1-5"),
    ("*/15 * * * *", "*/15 * * * *"),
    ("0 9 * * 7", "0 9 * * 0"),
    ("0 9 * * 5-7", "0 9 * * 0,5,6"),
    ("0 9 * jul-aug MON-FRI", "0 9 * 7,8 1-5"),
    ("5/15 * * * *", "5,20,35,50 * * * *"),
    ("@hourly", "0 * * * *"),
    ("@daily", "0 0 * * *"),
    ("@weekly", "0 0 * * 0"),
    ("@monthly", "0 0 1 * *"),
    ("30 2 * * *", "30 2 * * *"),
    ("0 0-23/2 1,15 * *", "0 0-23/2 1,15 * *"),
    ("0 9 1-7 * 1", "0 9 1-7 * 1"),  # day of month OR Monday (Vixie)
    ("0 0 */2 * 1", "0 0 */2 * 1"),  # odd days AND Monday (Vixie)
    ("15 1 * * *", "15 1 * * *"),
]


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize(("expression", "expected"), CRONS)
def test_cron_passes_through_in_the_common_dialect(
    expression: str, expected: str, zone: str
) -> None:
    original = Schedule.parse("cron", expression, zone)
    converted = schedule_to_cron(original)
    assert converted == expected
    assert_same_fires(original, converted, timedelta(days=2))


@pytest.mark.parametrize(
    ("expression", "match"),
    [
        ("0 9 L * *", r"L \(last\)"),
        ("0 9 * * 5#2", r"# \(nth weekday\)"),
        ("0 9 1W * *", r"W \(nearest weekday\)"),
        ("0 9 ? * *", r"uses \?"),
        ("0 9 * * * 30", "seconds field"),
        ("*/5 * * * * */10", "seconds field"),
    ],
)
def test_croniter_only_cron_is_refused(expression: str, match: str) -> None:
    for target in ("crontab", "kubernetes"):
        with pytest.raises(CronConversionError, match=match):
            to_cron("cron", expression, "UTC", target=target)


def test_kubernetes_refuses_a_stepped_day_field_it_reads_differently() -> None:
    assert to_cron("cron", "0 0 */2 * 1", "UTC") == "0 0 */2 * 1"
    with pytest.raises(CronConversionError, match="Kubernetes"):
        to_cron("cron", "0 0 */2 * 1", "UTC", target="kubernetes")
    assert to_cron("cron", "0 0 */2 * *", "UTC", target="kubernetes") == "0 0 */2 * *"


def test_once_is_refused() -> None:
    with pytest.raises(CronConversionError, match="single time"):
        to_cron("once", "2030-01-15T09:00:00Z", "UTC")


def test_refusals_are_value_errors_and_validation_errors_naming_the_field() -> None:
    with pytest.raises(ValueError, match="schedule_expression"):
        to_cron("monthly", "L 09:00", "UTC")
    with pytest.raises(ValidationError) as caught:
        to_cron("once", "2030-01-15T09:00:00Z", "UTC")
    assert caught.value.field == "schedule_expression"
    with pytest.raises(ValidationError):  # an invalid schedule is refused as invalid
        to_cron("daily", "25:00", "UTC")
    with pytest.raises(ValueError, match="target"):
        to_cron("daily", "09:00", "UTC", target="systemd")  # type: ignore[arg-type]
