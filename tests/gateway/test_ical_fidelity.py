"""Fidelity of the iCalendar export: expanding the exported calendar with
recurring-ical-events gives exactly the engine's fire times, in every zone, across DST.

Each case builds a task the way the repository stores it, exports it with the pure
`build_calendar`, expands the RFC 5545 text over a year from its next run (every DST
transition of the year included) and compares the sorted instants, duplicates kept, with the
engine's preview from the same next run (max_runs and the end bound honoured).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from ical_support import YEAR, ZONES, engine_instants, expand, scheduled

from apflow_server.core.errors import ValidationError
from apflow_server.scheduler.gateway.ical import (
    Occurrences,
    build_calendar,
    plan_occurrences,
)

NOW = datetime(2025, 1, 10, 10, 17, 23, tzinfo=UTC)
# Dense schedules take a while to compare over a year: these zones show every difference.
HALF_HOUR_ZONES = ("Europe/Berlin", "Australia/Lord_Howe", "Asia/Kolkata")
DAY = timedelta(days=1)


@dataclass(frozen=True)
class Case:
    type: str
    expression: str
    method: str | None = "rrule"  # the expected form in every zone (None: not asserted)
    zones: tuple[str, ...] = ZONES
    window: timedelta = YEAR
    fields: tuple[tuple[str, Any], ...] = ()
    slow: bool = False  # dense: thousands of engine occurrences to compare

    def __str__(self) -> str:
        return f"{self.type}:{self.expression}"


CASES = [
    # once: a single DTSTART
    Case("once", "2025-06-01T09:00:00", "single"),
    Case("once", "2025-06-01T09:00:00+02:00", "single"),
    Case("once", "2025-03-30T02:30:00", "single"),  # in Berlin's gap: 03:30 CEST
    Case("once", "2025-11-02T01:30:00-05:00", "single"),  # New York's second 01:30
    Case("once", "2025-01-01T00:00:00Z", "single"),  # already past: due now
    # interval: elapsed time, an RRULE in UTC (in the zone when its offset never changes)
    Case("interval", "3600"),
    Case("interval", "2h"),
    Case("interval", "45m"),
    Case("interval", "1d"),
    Case("interval", "7d"),
    Case("interval", "5400"),  # 1.5 h: MINUTELY;INTERVAL=90
    Case("interval", "86399"),  # not a whole minute: SECONDLY
    Case("interval", "15m", zones=("Europe/Berlin",), slow=True),
    Case("interval", "90s", window=timedelta(days=20)),
    # cron
    Case("cron", "0 * * * *", method=None),  # Lord Howe needs a patch (see below)
    Case("cron", "30 * * * *", method=None, zones=HALF_HOUR_ZONES),
    Case("cron", "*/15 * * * *", zones=("Europe/Berlin", "Australia/Lord_Howe"), slow=True),
    Case("cron", "*/30 * * * *", zones=("Australia/Lord_Howe",), slow=True),
    Case("cron", "0 9 * * 1-5"),
    Case("cron", "30 2 * * *"),  # in the spring-forward gap of Berlin and New York
    Case("cron", "30 1 * * *"),  # repeated at New York's fall-back
    Case("cron", "0 2 * * 0"),  # Sunday 02:00: the very transition in Europe and the US
    Case("cron", "0 */2 * * *"),
    Case("cron", "0 9,17 1,15 * *"),
    Case("cron", "15 10 * jan-mar mon"),
    Case("cron", "0 9 L * *"),
    Case("cron", "0 9 1,L * *"),
    Case("cron", "0 9 31 * *"),
    Case("cron", "0 9 * * 5#2"),
    Case("cron", "0 9 * * 1#1,5#3"),
    Case("cron", "0 9 */2 * 1"),  # day-of-month starts with *: both must match
    Case("cron", "0 9 1-7 * 1", "rdate"),  # Vixie: the 1st..7th OR any Monday
    Case("cron", "0 9 1,15 * 5", "rdate"),
    Case("cron", "0 9 15W * *", "rdate"),  # nearest weekday: no RRULE part
    Case("cron", "0 12 * * * 30"),  # 6th field: seconds
    Case("cron", "0 */6 * * * 15,45"),
    Case("cron", "15 * * * * 45", method=None, zones=HALF_HOUR_ZONES),  # hourly at :15:45
    Case(  # every hour, weekdays only
        "cron",
        "*/30 * * * 1-5",
        method=None,
        zones=("Europe/Berlin", "Australia/Lord_Howe"),
        slow=True,
    ),
    Case("cron", "*/30 1-3 * * *", method=None),  # gap times collide with 03:00/03:30
    Case("cron", "@daily"),
    Case("cron", "@weekly"),
    Case("cron", "@monthly"),
    Case("cron", "@yearly"),
    # daily / weekly / monthly: an RRULE in the task's zone
    Case("daily", "09:00"),
    Case("daily", "00:00"),
    Case("daily", "02:30"),  # in the gap
    Case("daily", "01:30"),  # repeated in New York
    Case("daily", "09:00,17:30"),  # not every hour x minute: BYSETPOS
    Case("daily", "09:00,09:30,17:00,17:30"),  # every hour x minute: BYHOUR, BYMINUTE
    Case("daily", "01:45,02:30,03:15"),  # around the gap
    Case("daily", "02:30,03:30", method=None),  # one instant in Berlin's spring gap
    Case("weekly", "1-5 09:00"),
    Case("weekly", "7 02:30"),  # Sunday, in the gap
    Case("weekly", "1,3,5 08:00,12:30"),
    Case("weekly", "6,7 01:30,02:15"),
    Case("monthly", "1,15 09:00"),
    Case("monthly", "31 09:00"),  # only months with a 31st
    Case("monthly", "L 18:00"),
    Case("monthly", "L,31 02:30"),
    Case("monthly", "1 00:00,12:00"),
    Case("monthly", "29,30 23:59"),
]


def _check(task: Any, now: datetime, window: timedelta) -> Occurrences:
    plan = plan_occurrences(task, now=now)
    assert plan is not None
    start = task.next_run_at
    end = start + window
    # The dates of a schedule no RRULE expresses cover the whole window here.
    calendar = build_calendar([task], now=now, max_occurrences=100_000)
    expected = engine_instants(task, end)
    got = expand(calendar, start, end)
    if got != expected:
        missing = sorted(set(expected) - set(got))[:5]
        extra = sorted(set(got) - set(expected))[:5]
        duplicates = len(got) - len(set(got))
        pytest.fail(
            f"{task.schedule_type} {task.schedule_expression!r} in {task.schedule_timezone} "
            f"as {plan.method} {plan.rrule}: engine-only {missing}, calendar-only {extra}, "
            f"{duplicates} duplicates ({len(expected)} expected, {len(got)} expanded)"
        )
    return plan


@pytest.mark.parametrize(
    ("case", "zone"),
    [
        pytest.param(case, zone, id=f"{case}-{zone}", marks=[pytest.mark.slow] * case.slow)
        for case in CASES
        for zone in case.zones
    ],
)
def test_expansion_is_the_engine_preview(case: Case, zone: str) -> None:
    task = scheduled(case.type, case.expression, zone, NOW, **dict(case.fields))
    plan = _check(task, NOW, case.window)
    print(f"{case} in {zone}: {plan.method} {plan.rrule or ''} ({plan.reason})")
    if case.method is not None:
        assert plan.method == case.method, plan.reason


@pytest.mark.parametrize(
    ("zone", "expression", "method"),
    [
        # every-hour crons: UTC minutes the same in every offset → one RRULE in UTC
        ("Europe/Berlin", "0 * * * *", "rrule"),
        ("Europe/London", "45 * * * *", "rrule"),
        ("Australia/Lord_Howe", "*/30 * * * *", "rrule"),
        # Lord Howe's :00 is :30 UTC in winter and :00 in summer: a wall-clock RRULE with an
        # EXDATE for the skipped 02:00 each spring
        ("Australia/Lord_Howe", "0 * * * *", "rrule+patches"),
        ("Asia/Kolkata", "0 * * * *", "rrule"),
        # one instant read twice in the gap (02:30 = 03:30 CEST): RDATEs
        ("Europe/Berlin", "*/30 1-3 * * *", "rdate"),
        ("Europe/London", "*/30 0-2 * * *", "rdate"),
    ],
)
def test_dst_sensitive_crons_pick_a_faithful_form(zone: str, expression: str, method: str) -> None:
    task = scheduled("cron", expression, zone, NOW)
    if zone == "Europe/London":  # the others' fidelity is in the table above
        plan = _check(task, NOW, YEAR)
    else:
        found = plan_occurrences(task, now=NOW)
        assert found is not None
        plan = found
    assert plan.method == method, plan.reason
    if method == "rrule" and zone not in ("Asia/Kolkata", "UTC"):
        assert plan.start.tzinfo is UTC  # elapsed time: expanded in UTC


def test_daily_times_colliding_in_a_gap_fall_back_to_dates() -> None:
    # 02:30 in Berlin's gap reads as 03:30 CEST: the engine fires once, an RRULE twice.
    task = scheduled("daily", "02:30,03:30", "Europe/Berlin", NOW)
    plan = _check(task, NOW, YEAR)
    assert plan.method == "rdate"
    day = datetime(2025, 3, 30, tzinfo=UTC)
    calendar = build_calendar([task], now=NOW)
    assert expand(calendar, day, day + DAY) == [datetime(2025, 3, 30, 1, 30, tzinfo=UTC)]


@pytest.mark.parametrize(
    ("now", "zone", "schedule_type", "expression"),
    [
        # starting right at, inside and after transitions
        (datetime(2025, 3, 30, 0, 59, 59, tzinfo=UTC), "Europe/Berlin", "cron", "*/15 * * * *"),
        (datetime(2025, 3, 30, 0, 59, 59, tzinfo=UTC), "Europe/Berlin", "daily", "02:30"),
        (datetime(2025, 3, 30, 1, 0, 0, tzinfo=UTC), "Europe/Berlin", "daily", "02:30,03:15"),
        (datetime(2025, 10, 26, 0, 15, tzinfo=UTC), "Europe/Berlin", "cron", "*/20 * * * *"),
        (datetime(2025, 10, 26, 1, 15, tzinfo=UTC), "Europe/Berlin", "cron", "*/20 * * * 0"),
        (datetime(2025, 11, 2, 5, 30, tzinfo=UTC), "America/New_York", "cron", "30 * * * *"),
        (datetime(2025, 11, 2, 5, 45, tzinfo=UTC), "America/New_York", "daily", "01:30"),
        (datetime(2025, 10, 4, 15, 0, tzinfo=UTC), "Australia/Lord_Howe", "cron", "0 * * * *"),
        (datetime(2025, 4, 5, 14, 40, tzinfo=UTC), "Australia/Lord_Howe", "cron", "45 * * * *"),
        (datetime(2025, 4, 5, 14, 40, tzinfo=UTC), "Australia/Lord_Howe", "daily", "01:45"),
    ],
)
def test_starting_next_to_a_transition(
    now: datetime, zone: str, schedule_type: str, expression: str
) -> None:
    task = scheduled(schedule_type, expression, zone, now)
    _check(task, now, timedelta(days=60))


@pytest.mark.parametrize("max_runs", [2, 3, 4, None])
def test_count_across_a_gap_where_wall_clock_and_instant_order_differ(
    max_runs: int | None,
) -> None:
    # On 2025-03-30 in Berlin 02:30 reads as 03:30 CEST (01:30Z), after 03:15 CEST (01:15Z):
    # RRULE's COUNT counts in wall-clock order, the engine in instant order.
    now = datetime(2025, 3, 28, 12, 0, tzinfo=UTC)
    task = scheduled("daily", "02:30,03:15", "Europe/Berlin", now, max_runs=max_runs)
    plan = _check(task, now, timedelta(days=30))
    assert plan.method == ("rrule" if max_runs is None else "rdate")


# ---------------------------------------------------------------------- bounds


def test_max_runs_becomes_count() -> None:
    task = scheduled("daily", "09:00", "Europe/Berlin", NOW, max_runs=10, run_count=3)
    plan = _check(task, NOW, YEAR)
    assert plan.method == "rrule"
    assert plan.rrule is not None and plan.rrule["COUNT"] == 7
    assert len(engine_instants(task, NOW + YEAR)) == 7


def test_end_bound_becomes_until_in_utc() -> None:
    end = datetime(2025, 4, 15, 13, 0, tzinfo=UTC)  # 09:00 New York (EDT) on a Tuesday
    task = scheduled("cron", "0 9 * * 1-5", "America/New_York", NOW, schedule_end_at=end)
    plan = _check(task, NOW, YEAR)
    assert plan.rrule is not None and plan.rrule["UNTIL"] == end
    assert "COUNT" not in plan.rrule
    assert engine_instants(task, NOW + YEAR)[-1] == end
    text = build_calendar([task], now=NOW).to_ical().decode()
    assert "UNTIL=20250415T130000Z" in text


@pytest.mark.parametrize(
    ("max_runs", "end_days", "bound"),
    [(20, 10, "UNTIL"), (5, 300, "COUNT"), (8, 7, "COUNT")],
)
def test_max_runs_and_end_bound_whichever_ends_first(
    max_runs: int, end_days: int, bound: str
) -> None:
    task = scheduled(
        "daily",
        "09:00",
        "Europe/Berlin",
        NOW,
        max_runs=max_runs,
        run_count=1,
        schedule_end_at=NOW + end_days * DAY,
    )
    plan = _check(task, NOW, YEAR)
    assert plan.rrule is not None and bound in plan.rrule
    assert ({"COUNT", "UNTIL"} - {bound}).isdisjoint(plan.rrule)


@pytest.mark.parametrize("zone", ZONES)
def test_interval_bounds(zone: str) -> None:
    start = datetime(2025, 2, 1, 0, 0, 7, tzinfo=UTC)
    task = scheduled(
        "interval",
        "5h",
        zone,
        NOW,
        schedule_start_at=start,
        schedule_end_at=start + 200 * DAY,
        max_runs=2000,
        run_count=2,
    )
    assert task.next_run_at == start
    plan = _check(task, NOW, YEAR)
    assert plan.rrule is not None and "UNTIL" in plan.rrule  # 200 days < 1998 runs of 5h
    task.max_runs = 100
    plan = _check(task, NOW, YEAR)
    assert plan.rrule is not None and plan.rrule["COUNT"] == 98


def test_start_bound_in_the_future() -> None:
    start = datetime(2025, 6, 1, 0, 0, tzinfo=UTC)
    task = scheduled("weekly", "1,4 07:30", "America/New_York", NOW, schedule_start_at=start)
    assert task.next_run_at is not None and task.next_run_at >= start
    _check(task, NOW, YEAR)


def test_patched_rule_with_bounds() -> None:
    end = datetime(2026, 2, 1, tzinfo=UTC)
    task = scheduled("cron", "0 * * * *", "Australia/Lord_Howe", NOW, schedule_end_at=end)
    plan = _check(task, NOW, YEAR)
    assert plan.method == "rrule+patches"
    assert plan.rrule is not None and plan.rrule["UNTIL"] == end
    # with a run count the patches would shift COUNT: a plain list of dates instead
    task = scheduled("cron", "0 * * * *", "Australia/Lord_Howe", NOW, max_runs=300)
    plan = _check(task, NOW, YEAR)
    assert plan.method == "rdate"
    assert len(plan.rdates) == 299


def test_rdates_are_bounded_by_the_horizon_and_count() -> None:
    task = scheduled("cron", "0 9 1,15 * 5", "Europe/Berlin", NOW)
    plan = plan_occurrences(task, now=NOW, horizon=timedelta(days=30))
    assert plan is not None and plan.method == "rdate"
    assert task.next_run_at is not None
    assert plan.rdates and max(plan.rdates) <= task.next_run_at + timedelta(days=30)
    plan = plan_occurrences(task, now=NOW, max_occurrences=4)
    assert plan is not None and len(plan.rdates) == 3  # DTSTART and three RDATEs


def test_exhausted_or_unscheduled_tasks_have_no_event() -> None:
    task = scheduled("daily", "09:00", "UTC", NOW, max_runs=3, run_count=2)
    task.run_count = 3  # the last run started: the repository clears next_run_at, too
    assert plan_occurrences(task, now=NOW) is None
    task = scheduled("daily", "09:00", "UTC", NOW)
    task.next_run_at = None
    assert plan_occurrences(task, now=NOW) is None
    task = scheduled("daily", "09:00", "UTC", NOW, schedule_end_at=NOW + DAY)
    task.next_run_at = NOW + 2 * DAY
    assert plan_occurrences(task, now=NOW) is None


def test_last_run_is_a_single_event() -> None:
    task = scheduled("cron", "*/5 * * * *", "Europe/Berlin", NOW, max_runs=4, run_count=3)
    plan = _check(task, NOW, YEAR)
    assert plan.method == "single"


# ---------------------------------------------------------------------- properties

SETTINGS = settings(
    max_examples=50,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)
STARTS = st.datetimes(
    min_value=datetime(2024, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC)
).map(lambda moment: moment.replace(microsecond=0))
# Times near midnight and the usual transition hours are the interesting ones.
HOURS = st.one_of(st.integers(0, 4), st.integers(0, 23))
MINUTES = st.one_of(st.sampled_from([0, 15, 30, 45]), st.integers(0, 59))


@st.composite
def times(draw: st.DrawFn, most: int = 3) -> str:
    count = draw(st.integers(1, most))
    picked = {(draw(HOURS), draw(MINUTES)) for _ in range(count)}
    return ",".join(f"{hour:02d}:{minute:02d}" for hour, minute in sorted(picked))


@st.composite
def day_times(draw: st.DrawFn) -> tuple[str, str]:
    kind = draw(st.sampled_from(["daily", "weekly", "monthly"]))
    at = draw(times())
    if kind == "daily":
        return kind, at
    if kind == "weekly":
        days = draw(st.sets(st.integers(1, 7), min_size=1, max_size=7))
        return kind, f"{','.join(map(str, sorted(days)))} {at}"
    days_of_month = draw(
        st.sets(st.one_of(st.integers(1, 31), st.just("L")), min_size=1, max_size=4)
    )
    text = ",".join(str(day) for day in sorted(days_of_month, key=str))
    return kind, f"{text} {at}"


def _field(draw: st.DrawFn, low: int, high: int, star: bool = True) -> str:
    options = ["value", "list", "range", "step"] + (["star"] if star else [])
    shape = draw(st.sampled_from(options))
    if shape == "star":
        return "*"
    if shape == "value":
        return str(draw(st.integers(low, high)))
    if shape == "list":
        values = draw(st.sets(st.integers(low, high), min_size=2, max_size=4))
        return ",".join(map(str, sorted(values)))
    if shape == "range":  # never "a-a": croniter 7 reads that as "*" (the engine too)
        first = draw(st.integers(low, high - 1))
        return f"{first}-{draw(st.integers(first + 1, high))}"
    return f"*/{draw(st.integers(2, max(2, (high - low + 1) // 2)))}"


@st.composite
def crons(draw: st.DrawFn) -> tuple[str, str]:
    every_hour = draw(st.booleans())
    if every_hour:  # elapsed time: at most 4 minutes, or it gets slow to compare over a year
        minutes = draw(st.sets(MINUTES, min_size=1, max_size=2))
        minute, hour = ",".join(map(str, sorted(minutes))), "*"
    else:
        minute = str(draw(MINUTES)) if draw(st.booleans()) else _field(draw, 0, 59, star=False)
        hour = _field(draw, 0, 23, star=False)
    dom = draw(st.sampled_from(["*", "*", "L", "1", "15", "31", "1,15", "1-7", "*/2", "28-31"]))
    if every_hour:  # an every-hour cron with Vixie's day OR is a year of dates: too slow here
        dom = "*"
    month = draw(st.sampled_from(["*", "*", "*", "1-6", "3,10", "2"]))
    dow = draw(st.sampled_from(["*", "*", "*", "1-5", "0", "6,0", "5#2", "0#1", "*/2"]))
    fields = [minute, hour, dom, month, dow]
    if draw(st.integers(0, 5)) == 0:
        fields.append(draw(st.sampled_from(["0", "30", "15,45"])))
    return "cron", " ".join(fields)


@st.composite
def intervals(draw: st.DrawFn) -> tuple[str, str]:
    seconds = draw(
        st.one_of(
            st.sampled_from([3600, 5400, 7200, 21600, 86400, 90000, 604800]),
            st.integers(3600, 14 * 86400),
        )
    )
    return "interval", str(seconds)


SCHEDULES = st.one_of(day_times(), crons(), intervals())


@SETTINGS
@given(
    schedule=SCHEDULES,
    zone=st.sampled_from(ZONES),
    now=STARTS,
    max_runs=st.one_of(st.none(), st.integers(1, 400)),
    end_days=st.one_of(st.none(), st.integers(1, 400)),
    start_days=st.one_of(st.none(), st.integers(-30, 60)),
)
def test_property_expansion_is_the_engine_preview(
    schedule: tuple[str, str],
    zone: str,
    now: datetime,
    max_runs: int | None,
    end_days: int | None,
    start_days: int | None,
) -> None:
    schedule_type, expression = schedule
    fields: dict[str, Any] = {}
    if max_runs is not None:
        fields["max_runs"] = max_runs
    if start_days is not None:
        fields["schedule_start_at"] = now + start_days * DAY + timedelta(seconds=17)
    if end_days is not None:
        fields["schedule_end_at"] = now + end_days * DAY + timedelta(seconds=start_days or 0)
        if start_days is not None and fields["schedule_end_at"] <= fields["schedule_start_at"]:
            del fields["schedule_end_at"]
    try:
        task = scheduled(schedule_type, expression, zone, now, **fields)
    except ValidationError:  # the engine refuses it (a cron that never fires): no task
        assume(False)
    except AssertionError:  # nothing left to fire within the bounds: no next run
        assume(False)
    _check(task, now, YEAR)
