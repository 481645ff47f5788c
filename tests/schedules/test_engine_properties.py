"""Property tests: the schedule engine against an independent oracle.

The oracle never asks the engine. It enumerates the local wall-clock times an expression names
and places each one in UTC by trying the zone's offsets (no `fold`): a time that occurs twice
means its first occurrence, a time inside a gap is read with the offset in force before the gap
(RFC 5545 §3.3.5). Every-hour crons are checked against the clock itself: they fire at each
whole UTC minute at which the local clock shows a listed minute.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from apflow_server.schedules import Schedule, jitter_delay

ZONES = (
    "UTC",
    "Europe/Berlin",
    "Europe/London",
    "America/New_York",
    "America/Santiago",  # transitions at local midnight
    "America/Sao_Paulo",  # DST until 2019
    "America/Havana",  # 00:00 -> 01:00 and 01:00 -> 00:00
    "America/St_Johns",  # -03:30 / -02:30
    "Australia/Lord_Howe",  # 30-minute shift
    "Australia/Adelaide",  # +09:30 / +10:30
    "Asia/Tehran",  # DST at midnight until 2022
    "Asia/Kolkata",  # +05:30, no DST
    "Asia/Kathmandu",  # +05:45, no DST
    "Pacific/Chatham",  # +12:45 / +13:45
    "Africa/Casablanca",  # Ramadan: the offset goes down and back up within weeks
    "Antarctica/Troll",  # two-hour shift
)

HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)
DAY = timedelta(days=1)
THREE_YEARS = timedelta(days=3 * 365 + 1)

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# ---------------------------------------------------------------------- oracle


def wall(zone: ZoneInfo, instant: datetime) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


def offset(zone: ZoneInfo, instant: datetime) -> timedelta:
    value = instant.astimezone(zone).utcoffset()
    assert value is not None
    return value


def local_to_utc(local: datetime, zone: ZoneInfo) -> datetime:
    """The RFC 5545 instant of a wall-clock time, found by trying the zone's offsets."""
    probe = local.replace(tzinfo=UTC)
    # Any instant showing `local` lies within [local - 14h, local + 12h]; sampling both sides of
    # that window yields the offsets before and after a transition inside it.
    offsets = {offset(zone, probe + timedelta(hours=h)) for h in (-15, -7, 1, 13)}
    hits = [probe - o for o in offsets if wall(zone, probe - o) == local]
    if hits:
        return min(hits)  # shown twice: the first occurrence
    for o in offsets:  # never shown: read it with the offset in force before the gap
        actual = offset(zone, probe - o)
        if actual != o and offset(zone, probe - actual) == o:
            return probe - min(o, actual)
    raise AssertionError(f"cannot place {local} in {zone.key}")


@cache
def transitions(zone_name: str, lo: datetime, hi: datetime) -> tuple[datetime, ...]:
    """The instants in [lo, hi] at which the zone's UTC offset changes (minute precision)."""
    zone = ZoneInfo(zone_name)
    found = []
    step = timedelta(hours=6)
    current, before = lo, offset(zone, lo)
    while current < hi:
        following = current + step
        after = offset(zone, following)
        if after != before:
            a, b = current, following
            while b - a > MINUTE:
                mid = a + ((b - a) // MINUTE // 2) * MINUTE
                if offset(zone, mid) == before:
                    a = mid
                else:
                    b = mid
            found.append(b)
        current, before = following, after
    return tuple(found)


@dataclass(frozen=True)
class WallSpec:
    """A wall-clock schedule and what it means, independently of the engine."""

    schedule_type: str
    expression: str
    times: tuple[time, ...]
    day_matches: Callable[[date], bool]

    def matches(self, local: datetime) -> bool:
        return local.time() in self.times and self.day_matches(local.date())

    def __repr__(self) -> str:  # what hypothesis prints for a falsifying example
        return f"WallSpec({self.schedule_type!r}, {self.expression!r})"


def wall_clock_oracle(spec: WallSpec, zone: ZoneInfo, lo: datetime, hi: datetime) -> list[datetime]:
    """Every instant in (lo, hi] at which `spec` fires, by RFC 5545, de-duplicated."""
    day = wall(zone, lo).date() - 2 * DAY
    last = wall(zone, hi).date() + 2 * DAY
    found: set[datetime] = set()
    while day <= last:
        if spec.day_matches(day):
            for at in spec.times:
                instant = local_to_utc(datetime.combine(day, at), zone)
                if lo < instant <= hi:
                    found.add(instant)
        day += DAY
    return sorted(found)


def clock_oracle(
    zone: ZoneInfo, minutes: frozenset[int], lo: datetime, hi: datetime
) -> list[datetime]:
    """Every whole UTC minute in (lo, hi] at which the local clock shows one of `minutes`."""
    found = []
    current = lo.replace(second=0, microsecond=0) + MINUTE
    while current <= hi:
        if current.astimezone(zone).minute in minutes:
            found.append(current)
        current += MINUTE
    return found


def reading(spec: WallSpec, zone: ZoneInfo, fire: datetime) -> datetime:
    """The wall-clock time a fire stands for: its local time, or on a gap day the local time
    read with the offset before the gap. Asserts the fire is a legitimate one for `spec`."""
    local = wall(zone, fire)
    if spec.matches(local):
        assert local_to_utc(local, zone) == fire, f"{fire} is not the first {local}"
        return local
    before = offset(zone, fire - 3 * HOUR)
    pre_gap = (fire + before).replace(tzinfo=None)
    assert spec.matches(pre_gap), f"{fire} ({local} local) matches nothing in {spec}"
    skipped = all(
        wall(zone, pre_gap.replace(tzinfo=UTC) - o) != pre_gap for o in (before, offset(zone, fire))
    )
    assert skipped, f"{fire} reads {pre_gap} before the gap, but that time is shown by the clock"
    return pre_gap


def walk(schedule: Schedule, lo: datetime, hi: datetime) -> list[datetime]:
    """next_after, step by step, from lo to hi."""
    fires: list[datetime] = []
    current = lo
    while (following := schedule.next_after(current)) is not None and following <= hi:
        assert following > current, f"next_after({current}) went back to {following}"
        fires.append(following)
        current = following
    return fires


def assert_same(got: list[datetime], expected: list[datetime]) -> None:
    if got == expected:
        return
    index = next(
        (i for i, (g, e) in enumerate(zip(got, expected, strict=False)) if g != e),
        min(len(got), len(expected)),
    )
    window = slice(max(0, index - 2), index + 3)
    raise AssertionError(
        f"first difference at #{index} (engine {len(got)} fires, oracle {len(expected)}): "
        f"engine {[g.isoformat() for g in got[window]]} "
        f"oracle {[e.isoformat() for e in expected[window]]}"
    )


# ---------------------------------------------------------------------- strategies

HOURS = st.one_of(st.integers(0, 23), st.sampled_from([0, 1, 2, 3, 23]))
MINUTES = st.one_of(st.sampled_from([0, 15, 30, 45]), st.integers(0, 59))
TIMES = st.builds(time, HOURS, MINUTES)


@cache
def transition_times(zone_name: str) -> tuple[time, ...]:
    """Local times of day in or next to the zone's gaps and repeated stretches (2016-2027)."""
    zone = ZoneInfo(zone_name)
    found: set[time] = set()
    lo, hi = datetime(2016, 1, 1, tzinfo=UTC), datetime(2028, 1, 1, tzinfo=UTC)
    for instant in transitions(zone_name, lo, hi):
        shift = [offset(zone, instant - MINUTE), offset(zone, instant)]
        start = (instant + min(shift)).replace(tzinfo=None)
        length = max(shift) - min(shift)
        for point in (-MINUTE, 0 * MINUTE, MINUTE, length / 2, length - MINUTE, length):
            found.add((start + point).time())
    return tuple(sorted(found))


def times_for(zone_name: str) -> st.SearchStrategy[time]:
    """Any time of day, often one that a DST transition of the zone skips or repeats."""
    special = transition_times(zone_name)
    return st.one_of(TIMES, st.sampled_from(special)) if special else TIMES


def window_start(year: int, day: int, minute: int) -> datetime:
    return datetime(year, 1, 1, tzinfo=UTC) + timedelta(days=day, minutes=minute)


STARTS = st.builds(
    window_start, st.integers(2016, 2024), st.integers(0, 364), st.integers(0, 24 * 60 - 1)
)
# seconds from a transition at which next_after is asked; often inside the gap / repeated hour
PROBES = st.lists(
    st.one_of(st.integers(-3 * 3600, 3 * 3600), st.integers(0, 2 * 3600)), min_size=1, max_size=4
)


def render_times(times: Iterable[time]) -> str:
    return ",".join(f"{t.hour:02d}:{t.minute:02d}" for t in times)


def render_numbers(values: Iterable[int], use_ranges: bool) -> list[str]:
    ordered = sorted(values)
    if not use_ranges:
        return [str(v) for v in ordered]
    parts: list[str] = []
    run = [ordered[0]]
    for value in ordered[1:]:
        if value == run[-1] + 1:
            run.append(value)
            continue
        parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [value]
    parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return parts


@st.composite
def daily_specs(draw: st.DrawFn, times: st.SearchStrategy[time]) -> WallSpec:
    chosen = draw(st.lists(times, min_size=1, max_size=3, unique=True))
    return WallSpec("daily", render_times(chosen), tuple(chosen), lambda d: True)


@st.composite
def weekly_specs(draw: st.DrawFn, times: st.SearchStrategy[time]) -> WallSpec:
    days = draw(st.sets(st.integers(1, 7), min_size=1))
    at = draw(times)
    text = ",".join(render_numbers(days, draw(st.booleans())))
    return WallSpec(
        "weekly", f"{text} {render_times([at])}", (at,), lambda d: d.isoweekday() in days
    )


@st.composite
def monthly_specs(draw: st.DrawFn, times: st.SearchStrategy[time]) -> WallSpec:
    days = draw(st.sets(st.integers(1, 31), max_size=4))
    last = draw(st.booleans()) or not days
    at = draw(times)
    parts = render_numbers(days, draw(st.booleans())) if days else []
    if last:
        parts.insert(draw(st.integers(0, len(parts))), draw(st.sampled_from(["L", "l"])))

    def matches(d: date) -> bool:
        return d.day in days or (last and d.day == calendar.monthrange(d.year, d.month)[1])

    return WallSpec("monthly", f"{','.join(parts)} {render_times([at])}", (at,), matches)


@st.composite
def cron_specs(draw: st.DrawFn, times: st.SearchStrategy[time]) -> WallSpec:
    """Crons with a restricted hour field (at most four fires a day)."""
    hours = draw(st.lists(times.map(lambda t: t.hour), min_size=1, max_size=2, unique=True))
    minutes = draw(
        st.lists(
            st.one_of(st.integers(0, 59), times.map(lambda t: t.minute)),
            min_size=1,
            max_size=2,
            unique=True,
        )
    )
    seconds = draw(st.none() | st.integers(0, 59))
    dom = draw(st.none() | st.sets(st.integers(1, 28), min_size=1, max_size=3))
    month = draw(st.none() | st.sets(st.integers(1, 12), min_size=1, max_size=4))
    dow = draw(st.none() | st.sets(st.integers(0, 7), min_size=1, max_size=3))

    def field(values: Iterable[int] | None) -> str:
        return "*" if values is None else ",".join(str(v) for v in sorted(values))

    expression = f"{field(minutes)} {field(hours)} {field(dom)} {field(month)} {field(dow)}"
    if seconds is not None:
        expression += f" {seconds}"
    sundays_as_0 = None if dow is None else {v % 7 for v in dow}

    def matches(d: date) -> bool:
        if month is not None and d.month not in month:
            return False
        dom_ok = dom is not None and d.day in dom
        dow_ok = sundays_as_0 is not None and d.isoweekday() % 7 in sundays_as_0
        if dom is not None and dow is not None:
            return dom_ok or dow_ok  # Vixie: either matches
        if dom is not None:
            return dom_ok
        if dow is not None:
            return dow_ok
        return True

    chosen = tuple(time(h, m, seconds or 0) for h in hours for m in minutes)
    return WallSpec("cron", expression, chosen, matches)


@st.composite
def wall_cases(draw: st.DrawFn) -> tuple[WallSpec, str]:
    """A daily, weekly or monthly schedule and its zone."""
    zone_name = draw(st.sampled_from(ZONES))
    times = times_for(zone_name)
    spec = draw(st.one_of(daily_specs(times), weekly_specs(times), monthly_specs(times)))
    return spec, zone_name


@st.composite
def cron_cases(draw: st.DrawFn) -> tuple[WallSpec, str]:
    zone_name = draw(st.sampled_from(ZONES))
    return draw(cron_specs(times_for(zone_name))), zone_name


@st.composite
def every_hour_crons(draw: st.DrawFn, max_minutes: int) -> tuple[str, frozenset[int]]:
    minutes = draw(st.lists(MINUTES, min_size=1, max_size=max_minutes, unique=True))
    hour_field = draw(st.sampled_from(["*", "*/1", "0-23"]))
    return f"{','.join(str(m) for m in sorted(minutes))} {hour_field} * * *", frozenset(minutes)


# ---------------------------------------------------------------------- wall-clock schedules


def check_wall_clock(spec: WallSpec, zone_name: str, lo: datetime, probes: list[int]) -> None:
    zone = ZoneInfo(zone_name)
    hi = lo + THREE_YEARS
    schedule = Schedule.parse(spec.schedule_type, spec.expression, zone_name)
    fires = walk(schedule, lo, hi)

    assert all(a < b for a, b in pairwise(fires)), "fire times must strictly increase"
    readings = [reading(spec, zone, fire) for fire in fires]
    assert len(set(readings)) == len(readings), "a local wall-clock time fired twice"
    expected = wall_clock_oracle(spec, zone, lo, hi)
    assert_same(fires, expected)

    # From an arbitrary instant near each transition, next_after is the next oracle instant.
    for transition in transitions(zone_name, lo, hi):
        for seconds in probes:
            after = transition + timedelta(seconds=seconds)
            want = next((e for e in expected if e > after), None)
            if after < lo or want is None:
                continue
            assert schedule.next_after(after) == want, f"next_after({after.isoformat()})"


@SETTINGS
@given(case=wall_cases(), lo=STARTS, probes=PROBES)
def test_daily_weekly_monthly_over_three_years(
    case: tuple[WallSpec, str], lo: datetime, probes: list[int]
) -> None:
    check_wall_clock(*case, lo, probes)


@settings(SETTINGS, max_examples=40)
@given(case=cron_cases(), lo=STARTS, probes=PROBES)
def test_fixed_hour_cron_over_three_years(
    case: tuple[WallSpec, str], lo: datetime, probes: list[int]
) -> None:
    check_wall_clock(*case, lo, probes)


# ---------------------------------------------------------------------- every-hour crons


def transition_windows(zone_name: str, lo: datetime) -> list[tuple[datetime, datetime]]:
    """Six hours either side of every transition in the three years from lo (or two plain days)."""
    found = transitions(zone_name, lo, lo + THREE_YEARS)
    if not found:
        return [(lo, lo + 2 * DAY)]
    return [(t - 6 * HOUR, t + 6 * HOUR) for t in found]


@SETTINGS
@given(
    cron=every_hour_crons(max_minutes=3),
    zone_name=st.sampled_from(ZONES),
    lo=STARTS,
    probes=PROBES,
)
@example(  # 2024-11-03T05:30Z is 01:30 EDT, inside the first pass of the repeated hour
    cron=("0 * * * *", frozenset({0})),
    zone_name="America/New_York",
    lo=datetime(2024, 1, 1, tzinfo=UTC),
    probes=[-30 * 60],
)
@example(
    cron=("0,30 * * * *", frozenset({0, 30})),
    zone_name="Europe/Berlin",
    lo=datetime(2024, 1, 1, tzinfo=UTC),
    probes=[0],
)
@example(  # a two-hour repeated stretch
    cron=("0 * * * *", frozenset({0})),
    zone_name="Antarctica/Troll",
    lo=datetime(2024, 1, 1, tzinfo=UTC),
    probes=[-90 * 60],
)
def test_every_hour_cron_runs_on_elapsed_time(
    cron: tuple[str, frozenset[int]], zone_name: str, lo: datetime, probes: list[int]
) -> None:
    """A cron firing every hour fires each time the clock shows a listed minute, no more, no
    less (no skipped or doubled real hour), also when next_after starts at any instant.

    With one minute an hour, exactly one hour passes between fires, unless the offset changed
    between them by a fraction of an hour (Lord Howe's 30 minutes): then less than two hours
    pass and the minute shown is the same, i.e. elapsed time plus the shift is whole hours.
    """
    expression, minutes = cron
    zone = ZoneInfo(zone_name)
    schedule = Schedule.parse("cron", expression, zone_name)
    for a, b in transition_windows(zone_name, lo):
        expected = clock_oracle(zone, minutes, a, b)
        fires = walk(schedule, a, b)
        assert len(set(fires)) == len(fires)
        assert_same(fires, expected)
        if len(minutes) == 1:
            for first, second in pairwise(fires):
                shift = offset(zone, second) - offset(zone, first)
                elapsed = second - first
                if shift % HOUR == timedelta(0):
                    assert elapsed == HOUR, (first, second)
                else:
                    assert elapsed < 2 * HOUR, (first, second)
                    assert (elapsed + shift) % HOUR == timedelta(0), (first, second)
        middle = a + 6 * HOUR
        for seconds in probes:
            after = middle + timedelta(seconds=seconds)
            want = next(e for e in expected if e > after)
            assert schedule.next_after(after) == want, f"next_after({after.isoformat()})"


# ---------------------------------------------------------------------- preview and bounds


@st.composite
def any_schedules(draw: st.DrawFn) -> tuple[str, str, str, dict[str, datetime]]:
    zone_name = draw(st.sampled_from(ZONES))
    base = draw(STARTS)
    kind = draw(st.sampled_from(["wall", "cron", "hourly", "interval", "once"]))
    bounds: dict[str, datetime] = {}
    times = times_for(zone_name)
    if kind == "wall":
        spec = draw(st.one_of(daily_specs(times), weekly_specs(times), monthly_specs(times)))
        schedule_type, expression = spec.schedule_type, spec.expression
    elif kind == "cron":
        schedule_type, expression = "cron", draw(cron_specs(times)).expression
    elif kind == "hourly":
        schedule_type, expression = "cron", draw(every_hour_crons(max_minutes=2))[0]
    elif kind == "interval":
        amount = draw(st.integers(1, 500))
        unit = draw(st.sampled_from(["", "s", "m", "h", "d"]))
        schedule_type, expression = "interval", f"{amount}{unit}"
        bounds["anchor_at"] = base + timedelta(seconds=draw(st.integers(-(10**7), 10**7)))
    else:
        instant = base + timedelta(minutes=draw(st.integers(-(10**5), 10**5)))
        schedule_type, expression = "once", wall(ZoneInfo(zone_name), instant).isoformat()
    if draw(st.booleans()):
        bounds["start_at"] = base + timedelta(minutes=draw(st.integers(-(10**5), 10**5)))
    if draw(st.booleans()):
        start = bounds.get("start_at", base)
        bounds["end_at"] = start + timedelta(minutes=draw(st.integers(1, 10**5)))
    return schedule_type, expression, zone_name, bounds


@SETTINGS
@given(
    built=any_schedules(),
    after_shift=st.integers(-(10**6), 10**6),
    count=st.integers(0, 12),
    remaining=st.none() | st.integers(-2, 15),
)
def test_preview_is_next_after_repeated(
    built: tuple[str, str, str, dict[str, datetime]],
    after_shift: int,
    count: int,
    remaining: int | None,
) -> None:
    schedule_type, expression, zone_name, bounds = built
    schedule = Schedule.parse(schedule_type, expression, zone_name, **bounds)
    after = datetime(2020, 6, 1, tzinfo=UTC) + timedelta(minutes=after_shift)

    chain: list[datetime] = []
    current = after
    while len(chain) < count:
        following = schedule.next_after(current)
        if following is None:
            break
        chain.append(following)
        current = following

    assert schedule.preview(count, after) == chain
    allowed = count if remaining is None else max(0, min(count, remaining))
    assert schedule.preview(count, after, remaining_runs=remaining) == chain[:allowed]
    for fire in chain:
        assert fire > after
        assert fire.utcoffset() == timedelta(0)
        if "start_at" in bounds:
            assert fire >= bounds["start_at"]
        if "end_at" in bounds:
            assert fire <= bounds["end_at"]


@SETTINGS
@given(
    period=st.integers(1, 10**6),
    anchor=STARTS,
    use_start=st.booleans(),
    after_shift=st.integers(-(10**8), 10**8),
    zone_name=st.sampled_from(ZONES),
)
def test_interval_grid_is_drift_free(
    period: int, anchor: datetime, use_start: bool, after_shift: int, zone_name: str
) -> None:
    """Interval fires are exactly anchor + k*period, k >= 0, whatever the zone or DST."""
    key = "start_at" if use_start else "anchor_at"
    schedule = Schedule.parse("interval", str(period), zone_name, **{key: anchor})
    after = anchor + timedelta(seconds=after_shift)
    got = schedule.preview(3, after)
    if after < anchor:
        first = anchor
    else:
        first = anchor + ((after - anchor) // timedelta(seconds=period) + 1) * timedelta(
            seconds=period
        )
    step = timedelta(seconds=period)
    assert got == [first, first + step, first + 2 * step]


# ---------------------------------------------------------------------- jitter

INSTANTS = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


@settings(max_examples=100, deadline=None, database=None)
@given(
    task_id=st.text(min_size=1, max_size=40),
    instant=INSTANTS,
    max_seconds=st.integers(0, 86_400),
    zone_name=st.sampled_from(ZONES),
)
def test_jitter_is_deterministic_and_bounded(
    task_id: str, instant: datetime, max_seconds: int, zone_name: str
) -> None:
    delay = jitter_delay(task_id, instant, max_seconds)
    assert delay == jitter_delay(task_id, instant, max_seconds)
    # the same instant written in another zone is the same occurrence
    assert delay == jitter_delay(task_id, instant.astimezone(ZoneInfo(zone_name)), max_seconds)
    assert timedelta(0) <= delay <= timedelta(seconds=max_seconds)


@pytest.mark.parametrize("max_seconds", [0, -5])
def test_no_jitter_without_a_positive_maximum(max_seconds: int) -> None:
    assert jitter_delay("task", datetime(2024, 1, 1, tzinfo=UTC), max_seconds) == timedelta(0)


def test_jitter_spreads_tasks_and_occurrences() -> None:
    instant = datetime(2024, 1, 1, 9, tzinfo=UTC)
    by_task = {jitter_delay(f"task-{i}", instant, 60) for i in range(200)}
    by_occurrence = {jitter_delay("task", instant + i * HOUR, 60) for i in range(200)}
    assert len(by_task) > 30
    assert len(by_occurrence) > 30
    assert max(by_task) <= timedelta(seconds=60)
