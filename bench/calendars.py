"""Changing a business calendar: every schedule that follows it gets its next_run_at again, in
one transaction. Target: 100,000 schedules in at most 10 s, at most 50 us per schedule at p99.

    .venv/bin/python bench/calendars.py                                # --tasks 100000
    .venv/bin/python bench/calendars.py --tasks 10000 --rule skip

A fresh PostgreSQL database is created and migrated; the local operator's calendar "munich"
(Bavarian public holidays, Saturday and Sunday) is created through the service, and --tasks
enabled schedules naming it are COPY-inserted: daily at various times, weekly on weekdays,
cron `0 9 * * 1-5` and two other crons, monthly `BD1 09:00` / `BDL 17:00`, in Europe/Berlin,
America/New_York, Asia/Tokyo and UTC, some with jitter, all with --rule. Their next_run_at and
due_at are computed by the project's own schedule math (plan.first_fire), then VACUUM ANALYZE.

1. The whole `service.calendars.update(None, "munich", {"dates": [day]})` is timed (wall
   clock), three times, each closing another business day 2 to 9 days ahead (the one before
   reopens). After each, a spot check: with next_business_day or previous_business_day every
   schedule whose next occurrence fell on the day closed has moved, and none is left on it;
   with skip only business-day (BD) schedules move, the others keep their occurrence there
   (the scheduler records it skipped). Besides, for 2,000 schedules picked at random the stored
   next_run_at and due_at equal what plan.py computes.
2. The pure recomputation, no database: the same schedules as plain objects, under a calendar
   no one has used yet, `set_next_run(task, fire_after(schedule_of(task), task, start))`
   timed per schedule (perf_counter_ns): a cold pass (plan.py's parse caches cleared, a fresh
   calendar: what every update meets, since each new version is a new calendar) and a warm one.
3. Where the time goes, in rolled-back transactions after the timed ones: (a) the steps of
   storage/calendars.update done one by one with a clock between them (lock, load the ORM rows,
   recompute, flush; each schedule's loop step timed, and the statements' own time), and (b)
   the alternative: select only the schedule columns with SQLAlchemy Core, recompute on plain
   objects, write back with one `update_rows` (storage/batches.py), every row, then only the
   rows that moved. With --profile on (or auto and the best update over 10 s), one more real
   update runs under cProfile.

The hour of the run matters for the tail: a schedule whose occurrence today (in its zone) has
passed takes a longer path to the next business day's (for a cron expression, a new croniter),
so which zones are past their times changes the per-schedule tail. The UTC time is printed.

Prints a Markdown summary, then one JSON line. The database is dropped at the end, also on
failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import random
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
from sqlalchemy import event, select

sys.path.insert(0, str(Path(__file__).resolve().parent))

from burst import create_pg, drop_pg, percentile

from apflow_server.config import Settings
from apflow_server.core.types import ScheduleType
from apflow_server.schedules import plan
from apflow_server.schedules.calendars import BusinessCalendar as ClosedDays
from apflow_server.schedules.calendars import build_calendar, is_business_day_expression
from apflow_server.schedules.plan import fire_after, first_fire, schedule_of, set_next_run
from apflow_server.service import Service
from apflow_server.storage import calendars as store
from apflow_server.storage.batches import update_rows
from apflow_server.storage.database import Database
from apflow_server.storage.listener import asyncpg_dsn
from apflow_server.storage.models import TASKS, BusinessCalendar, Task
from apflow_server.storage.repository import TaskRepository

TARGET_TOTAL_S = 10.0
TARGET_P99_US = 50.0
CALENDAR = "munich"
HOLIDAYS = {"country": "DE", "subdivision": "BY"}
ZONES = ("Europe/Berlin", "America/New_York", "Asia/Tokyo", "UTC")
RULES = ("skip", "next_business_day", "previous_business_day")
SAMPLE = 2_000
TINY = timedelta(microseconds=1)
WRITTEN = ("next_run_at", "due_at", "schedule_enabled", "updated_at")

COLUMNS = (
    "id", "user_id", "name", "status", "priority", "inputs", "params", "schemas",
    "dependencies", "progress", "created_at", "updated_at", "schedule_type",
    "schedule_expression", "schedule_timezone", "schedule_enabled", "run_count", "next_run_at",
    "schedule_misfire", "schedule_overlap", "schedule_jitter_seconds", "due_at",
    "schedule_paused", "consecutive_failures", "schedule_skip_count", "schedule_mode",
    "schedule_calendar", "schedule_calendar_rule",
)  # fmt: skip


@dataclass
class PlainTask:
    """The attributes plan.py reads and writes, as a plain object."""

    id: str
    schedule_type: str
    schedule_expression: str
    schedule_timezone: str
    schedule_jitter_seconds: int
    schedule_calendar_rule: str
    schedule_calendar: str | None = CALENDAR
    schedule_start_at: datetime | None = None
    schedule_end_at: datetime | None = None
    schedule_anchor_at: datetime | None = None
    max_runs: int | None = None
    run_count: int = 0
    schedule_enabled: bool = True
    next_run_at: datetime | None = None
    due_at: datetime | None = None
    schedule_mode: str = "internal"
    trigger_grace_seconds: int | None = None
    loaded_calendar: Any = None


# ---------------------------------------------------------------------- the mix


def pick_shape(rng: random.Random) -> tuple[str, str]:
    """(type, expression): mostly round times, as people write them."""
    roll = rng.random()
    if roll < 0.30:  # daily, one time on the quarter hour between 05:00 and 22:45
        return "daily", f"{rng.randint(5, 22):02d}:{rng.choice((0, 0, 0, 15, 30, 45)):02d}"
    if roll < 0.35:
        return "daily", rng.choice(("06:30,18:30", "08:00,20:00", "00:00,12:00", "09:00,13:00"))
    if roll < 0.45:
        return "weekly", rng.choice(("1-5 08:00", "1-5 09:30", "1-5 18:00"))
    if roll < 0.60:  # one weekday: the schedules whose next occurrence is ~a week ahead
        return "weekly", f"{rng.randint(1, 5)} {rng.choice(('07:15', '10:00', '14:30', '16:00'))}"
    if roll < 0.72:
        return "cron", "0 9 * * 1-5"
    if roll < 0.76:
        return "cron", "30 7 * * *"
    if roll < 0.80:
        return "cron", "15 */4 * * 1-5"
    if roll < 0.90:
        return "monthly", "BD1 09:00"
    return "monthly", "BDL 17:00"


def make_tasks(
    count: int, rule: str, calendar: ClosedDays, now: datetime, rng: random.Random
) -> list[PlainTask]:
    """The schedules, next_run_at and due_at computed as the service would (first_fire)."""
    tasks = []
    for _ in range(count):
        kind, expression = pick_shape(rng)
        task = PlainTask(
            id=str(uuid.uuid4()),
            schedule_type=kind,
            schedule_expression=expression,
            schedule_timezone=rng.choice(ZONES),
            schedule_jitter_seconds=rng.choices((0, 60, 300), (70, 20, 10))[0],
            schedule_calendar_rule=rule,
            loaded_calendar=calendar,
        )
        set_next_run(task, first_fire(schedule_of(task), task, now))
        assert task.schedule_enabled, task
        tasks.append(task)
    return tasks


async def copy_tasks(dsn: str, tasks: list[PlainTask], now: datetime, rng: random.Random) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        for start in range(0, len(tasks), 50_000):
            records = []
            for index, task in enumerate(tasks[start : start + 50_000], start=start):
                created = now - timedelta(seconds=rng.uniform(86400, 400 * 86400))
                records.append(
                    (
                        task.id, None, f"cal-{task.schedule_type}-{index:06d}", "pending", 2,
                        '{"url": "https://api.example.com/v1/report", "method": "POST"}',
                        '{"executor_id": "rest_executor"}', "{}", "[]", 0.0, created, created,
                        task.schedule_type, task.schedule_expression, task.schedule_timezone,
                        True, 0, task.next_run_at, "run_once", "skip",
                        task.schedule_jitter_seconds, task.due_at, False, 0, 0, "internal",
                        CALENDAR, task.schedule_calendar_rule,
                    )
                )  # fmt: skip
            await connection.copy_records_to_table("tasks", records=records, columns=COLUMNS)
        await connection.execute("VACUUM ANALYZE tasks")
    finally:
        await connection.close()


def closing_days(calendar: ClosedDays, today: date, count: int) -> list[date]:
    """Business days from 2 days ahead (a margin for the zones): the first few are within a
    week, where the one-weekday schedules have their next occurrence."""
    found: list[date] = []
    day = today + timedelta(days=2)
    while len(found) < count:
        if calendar.is_business_day(day):
            found.append(day)
        day += timedelta(days=1)
    return found


def calendar_closing(day: date) -> ClosedDays:
    return build_calendar(
        country=HOLIDAYS["country"], subdivision=HOLIDAYS["subdivision"], dates=[day.isoformat()]
    )


# ---------------------------------------------------------------------- the timed update


async def snapshot(dsn: str) -> dict[str, tuple[datetime, datetime]]:
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch("SELECT id, next_run_at, due_at FROM tasks")
    finally:
        await connection.close()
    return {row["id"]: (row["next_run_at"], row["due_at"]) for row in rows}


def local_day(instant: datetime | None, zone: str) -> date | None:
    return None if instant is None else instant.astimezone(ZoneInfo(zone)).date()


def check_update(
    tasks: dict[str, PlainTask],
    before: dict[str, tuple[datetime, datetime]],
    after: dict[str, tuple[datetime, datetime]],
    closed: date,
    rule: str,
    started: datetime,
    rng: random.Random,
) -> dict[str, Any]:
    """The spot check of one update (see the module's docstring)."""
    changed = {key for key, value in after.items() if value[0] != before[key][0]}
    on_day_before = {
        key
        for key, task in tasks.items()
        if local_day(before[key][0], task.schedule_timezone) == closed
    }
    on_day_after = {
        key
        for key, task in tasks.items()
        if local_day(after[key][0], task.schedule_timezone) == closed
    }
    business_days = {
        key for key, task in tasks.items() if is_business_day_expression(task.schedule_expression)
    }
    problems: list[str] = []
    if rule == "skip":
        if changed - business_days:
            problems.append(f"{len(changed - business_days)} non-BD schedules moved under skip")
        if on_day_after & business_days:
            problems.append(f"{len(on_day_after & business_days)} BD schedules on the closed day")
    else:
        if on_day_before - changed:
            problems.append(f"{len(on_day_before - changed)} schedules on the closed day kept it")
        if on_day_after:
            problems.append(f"{len(on_day_after)} schedules on the closed day after the update")
    if len(after) != len(before):
        problems.append(f"{len(before)} rows before, {len(after)} after")
    # A sample recomputed here with plan.py, from what each task held before the update.
    calendar = calendar_closing(closed)
    mismatches = 0
    for key in rng.sample(sorted(tasks), k=min(SAMPLE, len(tasks))):
        task = replace(
            tasks[key], next_run_at=before[key][0], due_at=before[key][1], loaded_calendar=calendar
        )
        start = min(task.next_run_at or started, started) - TINY
        set_next_run(task, fire_after(schedule_of(task), task, start))
        if (task.next_run_at, task.due_at) != after[key]:
            mismatches += 1
    if mismatches:
        problems.append(f"{mismatches} of {min(SAMPLE, len(tasks))} sampled differ from plan.py")
    return {
        "changed": len(changed),
        "on_closed_day_before": len(on_day_before),
        "on_closed_day_after": len(on_day_after),
        "sample_mismatches": mismatches,
        "ok": not problems,
        "problems": problems,
    }


async def timed_update(
    service: Service, dsn: str, tasks: dict[str, PlainTask], day: date, rule: str, seed: int
) -> dict[str, Any]:
    before = await snapshot(dsn)
    started = datetime.now(UTC)
    began = time.perf_counter()
    updated = await service.calendars.update(None, CALENDAR, {"dates": [day.isoformat()]})
    seconds = time.perf_counter() - began
    after = await snapshot(dsn)
    check = check_update(tasks, before, after, day, rule, started, random.Random(seed))
    return {
        "date": day.isoformat(),
        "weekday": day.strftime("%a"),
        "version": updated.version,
        "seconds": round(seconds, 3),
        "us_per_schedule": round(seconds * 1e6 / len(tasks), 1),
        **check,
    }


# ---------------------------------------------------------------------- the pure recomputation


def recompute_pass(tasks: list[PlainTask], now: datetime) -> list[int]:
    """Nanoseconds per schedule of update()'s step (its non-`once` branch)."""
    times = []
    clock = time.perf_counter_ns
    for task in tasks:
        start = min(task.next_run_at or now, now) - TINY
        began = clock()
        set_next_run(task, fire_after(schedule_of(task), task, start))
        times.append(clock() - began)
    return times


def distribution(nanoseconds: list[int]) -> dict[str, float]:
    micro = [value / 1000 for value in nanoseconds]
    return {
        "p50_us": round(percentile(micro, 0.50), 2),
        "p95_us": round(percentile(micro, 0.95), 2),
        "p99_us": round(percentile(micro, 0.99), 2),
        "max_us": round(max(micro), 1),
        "mean_us": round(sum(micro) / len(micro), 2),
        "total_s": round(sum(micro) / 1e6, 3),
    }


def kind_of(task: PlainTask) -> str:
    """The mix's kinds: a cron or monthly by its expression, daily and weekly by their form."""
    expression = task.schedule_expression
    if task.schedule_type == "daily":
        return "daily, two times" if "," in expression else "daily, one time"
    if task.schedule_type == "weekly":
        return "weekly 1-5" if expression.startswith("1-5") else "weekly, one weekday"
    return f"{task.schedule_type} {expression}"


def pure_passes(tasks: list[PlainTask], day: date) -> dict[str, Any]:
    calendar = calendar_closing(day)  # a definition not used before: a fresh cache key
    plan._parsed.cache_clear()
    plan._under_calendar.cache_clear()
    now = datetime.now(UTC)
    results: dict[str, Any] = {}
    kinds: dict[str, dict[str, Any]] = {}
    for name in ("cold", "warm"):
        copies = [replace(task, loaded_calendar=calendar) for task in tasks]
        times = recompute_pass(copies, now)
        results[name] = distribution(times)
        grouped: dict[str, list[int]] = {}
        for task, spent in zip(tasks, times, strict=True):
            grouped.setdefault(kind_of(task), []).append(spent)
        for kind, spent in sorted(grouped.items()):
            kinds.setdefault(kind, {"count": len(spent)})[name] = distribution(spent)
    results["by_kind"] = kinds
    return results


# ---------------------------------------------------------------------- where the time goes


class RolledBack(Exception):
    """Raised to leave a measuring transaction without committing it."""


@contextmanager
def statement_clock(database: Database) -> Iterator[dict[str, list[float]]]:
    """Seconds each statement took in the driver (execute or executemany), by its verb."""
    spent: dict[str, list[float]] = {}
    engine = database.engine.sync_engine

    def before(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        conn.info.setdefault("bench_started", []).append(time.perf_counter())

    def after(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool):
        elapsed = time.perf_counter() - conn.info["bench_started"].pop()
        verb = statement.split(None, 1)[0].upper() + (" (executemany)" if many else "")
        spent.setdefault(verb, []).append(elapsed)

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    try:
        yield spent
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)


def statements_of(spent: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    return {
        verb: {"count": len(times), "seconds": round(sum(times), 3)}
        for verb, times in sorted(spent.items())
    }


async def orm_steps(database: Database, calendar_id: str, day: date) -> dict[str, Any]:
    """storage/calendars.update's steps, one by one, timed; rolled back. The calendar is built
    with build_calendar, not store.closed_days, whose cache is keyed by version (a rolled-back
    version would be served to the next real update)."""
    steps: dict[str, float] = {}
    loop_ns: list[int] = []
    with statement_clock(database) as spent:
        began = time.perf_counter()
        try:
            async with database.transaction(write=True) as session:
                mark = time.perf_counter()
                calendar = await session.get(BusinessCalendar, calendar_id, with_for_update=True)
                assert calendar is not None
                now = datetime.now(UTC)
                calendar.dates = [{"date": day.isoformat(), "reason": "closed"}]
                calendar.version += 1
                calendar.updated_at = now
                await session.flush()
                steps["lock_and_write_calendar"] = time.perf_counter() - mark
                mark = time.perf_counter()
                closed = build_calendar(
                    weekend=calendar.weekend,
                    country=calendar.country,
                    subdivision=calendar.subdivision,
                    categories=calendar.categories,
                    dates=calendar.dates,
                    ics=calendar.ics,
                )
                steps["build_calendar"] = time.perf_counter() - mark
                mark = time.perf_counter()
                result = await session.scalars(
                    select(Task)
                    .where(
                        Task.user_id.is_(None),
                        Task.schedule_calendar == calendar.name,
                        Task.schedule_enabled,
                    )
                    .with_for_update()
                )
                tasks = list(result)
                steps["select_orm_rows"] = time.perf_counter() - mark
                mark = time.perf_counter()
                clock = time.perf_counter_ns
                for task in tasks:
                    started = clock()
                    task.loaded_calendar = closed
                    start = min(task.next_run_at or now, now) - TINY
                    schedule = schedule_of(task)
                    if schedule.type is ScheduleType.ONCE:
                        set_next_run(task, schedule.first_fire(now))
                    else:
                        set_next_run(task, fire_after(schedule, task, start))
                    task.updated_at = now
                    loop_ns.append(clock() - started)
                steps["recompute_loop"] = time.perf_counter() - mark
                mark = time.perf_counter()
                await session.flush()
                steps["flush"] = time.perf_counter() - mark
                mark = time.perf_counter()
                raise RolledBack
        except RolledBack:
            steps["rollback"] = time.perf_counter() - mark
        total = time.perf_counter() - began
    return {
        "tasks": len(loop_ns),
        "seconds": {key: round(value, 3) for key, value in steps.items()},
        "total_s": round(total, 3),
        "loop_per_schedule": distribution(loop_ns),
        "statements": statements_of(spent),
    }


async def core_alternative(
    database: Database, calendar_id: str, day: date, *, only_moved: bool
) -> dict[str, Any]:
    """The suggested way, rolled back: the schedule columns only (Core), plain objects, and
    one UPDATE ... FROM unnest(...) through update_rows; every row, or (`only_moved`) only
    the rows whose next_run_at, due_at or schedule_enabled changed."""
    steps: dict[str, float] = {}
    loop_ns: list[int] = []
    rows_written = 0
    columns = (
        Task.id, Task.schedule_type, Task.schedule_expression, Task.schedule_timezone,
        Task.schedule_jitter_seconds, Task.schedule_calendar_rule, Task.schedule_start_at,
        Task.schedule_end_at, Task.schedule_anchor_at, Task.max_runs, Task.run_count,
        Task.next_run_at, Task.schedule_mode, Task.trigger_grace_seconds, Task.due_at,
    )  # fmt: skip
    with statement_clock(database) as spent:
        began = time.perf_counter()
        try:
            async with database.transaction(write=True) as session:
                mark = time.perf_counter()
                calendar = await session.get(BusinessCalendar, calendar_id, with_for_update=True)
                assert calendar is not None
                now = datetime.now(UTC)
                closed = calendar_closing(day)
                steps["lock_and_build_calendar"] = time.perf_counter() - mark
                mark = time.perf_counter()
                result = await session.execute(
                    select(*columns)
                    .where(
                        Task.user_id.is_(None),
                        Task.schedule_calendar == calendar.name,
                        Task.schedule_enabled,
                    )
                    .with_for_update()
                )
                rows = result.all()
                steps["select_columns"] = time.perf_counter() - mark
                mark = time.perf_counter()
                written = []
                clock = time.perf_counter_ns
                for row in rows:
                    started = clock()
                    task = PlainTask(**row._mapping, loaded_calendar=closed)
                    start = min(task.next_run_at or now, now) - TINY
                    set_next_run(task, fire_after(schedule_of(task), task, start))
                    moved = (task.next_run_at, task.due_at, task.schedule_enabled) != (
                        row.next_run_at,
                        row.due_at,
                        True,
                    )
                    if moved or not only_moved:
                        written.append(
                            {
                                "id": task.id,
                                "next_run_at": task.next_run_at,
                                "due_at": task.due_at,
                                "schedule_enabled": task.schedule_enabled,
                                "updated_at": now,
                            }
                        )
                    loop_ns.append(clock() - started)
                steps["recompute_loop"] = time.perf_counter() - mark
                mark = time.perf_counter()
                rows_written = len(written)
                await update_rows(session, TASKS, "id", WRITTEN, written)
                steps["update_rows"] = time.perf_counter() - mark
                mark = time.perf_counter()
                raise RolledBack
        except RolledBack:
            steps["rollback"] = time.perf_counter() - mark
        total = time.perf_counter() - began
    return {
        "tasks": len(loop_ns),
        "rows_written": rows_written,
        "seconds": {key: round(value, 3) for key, value in steps.items()},
        "total_s": round(total, 3),
        "loop_per_schedule": distribution(loop_ns),
        "statements": statements_of(spent),
    }


def area_of(filename: str) -> str:
    path = filename.replace(os.sep, "/")
    for marker, area in (
        ("sqlalchemy/orm/", "sqlalchemy.orm"),
        ("sqlalchemy/", "sqlalchemy (core, engine, async)"),
        ("asyncpg/", "asyncpg"),
        ("apflow_server/schedules/", "apflow schedule math"),
        ("apflow_server/", "apflow other"),
        ("holidays/", "holidays package"),
        ("croniter/", "croniter"),
        ("/zoneinfo/", "zoneinfo"),
        ("/asyncio/", "asyncio"),
        ("/json/", "json"),
    ):
        if marker in path:
            return area
    return "built-ins (C)" if filename == "~" else "other Python"


async def profiled_update(service: Service, day: date, top: int) -> dict[str, Any]:
    profiler = cProfile.Profile()
    began = time.perf_counter()
    profiler.enable()
    await service.calendars.update(None, CALENDAR, {"dates": [day.isoformat()]})
    profiler.disable()
    seconds = time.perf_counter() - began
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    areas: Counter[str] = Counter()
    functions = []
    for (filename, line, name), (_, calls, own, cumulative, _) in stats.items():
        areas[area_of(filename)] += own
        short = "/".join(filename.replace(os.sep, "/").split("/")[-2:])
        functions.append((own, cumulative, calls, f"{short}:{line}({name})"))
    functions.sort(reverse=True)
    profiled_total = sum(areas.values())
    return {
        "date": day.isoformat(),
        "seconds_under_profiler": round(seconds, 2),
        "areas_own_time": {
            area: {"seconds": round(own, 2), "share": round(own / profiled_total, 3)}
            for area, own in areas.most_common()
        },
        "top_own_time": [
            {"function": where, "own_s": round(own, 3), "cum_s": round(cum, 3), "calls": calls}
            for own, cum, calls, where in functions[:top]
        ],
    }


# ---------------------------------------------------------------------- report


def markdown(summary: dict[str, Any]) -> str:
    lines = [
        f"## Calendar change: {summary['tasks']:,} schedules, rule {summary['rule']}",
        "",
        f"Run at {summary['started_utc']} UTC (load {summary['load_before']} before, "
        f"{summary['load_after']} after). Seeded in {summary['seed_seconds']} s "
        f"({summary['seed_detail']}); "
        f"{summary['shapes']} distinct schedule shapes (type, expression, zone).",
        "",
        "| update | closes | seconds | us/schedule | changed | on the day before / after | check |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for number, run in enumerate(summary["updates"], start=1):
        check = "ok" if run["ok"] else "FAILED: " + "; ".join(run["problems"])
        lines.append(
            f"| {number} | {run['date']} ({run['weekday']}) | {run['seconds']} | "
            f"{run['us_per_schedule']} | {run['changed']:,} | "
            f"{run['on_closed_day_before']:,} / {run['on_closed_day_after']:,} | {check} |"
        )
    lines += [
        "",
        "Pure recomputation per schedule, no database "
        "(`set_next_run(task, fire_after(schedule_of(task), task, start))`):",
        "",
        "| pass | p50 us | p95 us | p99 us | max us | mean us | total s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in ("cold", "warm"):
        figures = summary["pure"][name]
        lines.append(
            f"| {name} | {figures['p50_us']} | {figures['p95_us']} | {figures['p99_us']} | "
            f"{figures['max_us']} | {figures['mean_us']} | {figures['total_s']} |"
        )
    lines += [
        "",
        "By kind (cold / warm):",
        "",
        "| kind | schedules | p50 us | p99 us | mean us | share of the warm total |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    warm_total = summary["pure"]["warm"]["total_s"] or 1.0
    for kind, figures in summary["pure"]["by_kind"].items():
        cold, warm = figures["cold"], figures["warm"]
        lines.append(
            f"| {kind} | {figures['count']:,} | {cold['p50_us']} / {warm['p50_us']} | "
            f"{cold['p99_us']} / {warm['p99_us']} | {cold['mean_us']} / {warm['mean_us']} | "
            f"{warm['total_s'] / warm_total:.0%} |"
        )
    targets = summary["targets"]
    lines += [
        "",
        f"Targets: whole update <= {TARGET_TOTAL_S:g} s: best {summary['update_best_seconds']} s "
        f"-> {'met' if targets['total_met'] else 'MISSED'}; p99 <= {TARGET_P99_US:g} us per "
        f"schedule: update loop (ORM rows) {targets['loop_p99_us']} us, pure cold "
        f"{summary['pure']['cold']['p99_us']} us -> {'met' if targets['p99_met'] else 'MISSED'}.",
    ]
    for key, title in (
        ("orm_steps", "storage/calendars.update's steps (rolled back)"),
        ("core_alternative", "alternative: Core columns + update_rows of every row (rolled back)"),
        ("core_moved_only", "the same, writing only the rows that moved (rolled back)"),
    ):
        found = summary.get(key)
        if not found:
            continue
        steps = ", ".join(f"{name} {value} s" for name, value in found["seconds"].items())
        statements = ", ".join(
            f"{verb} x{value['count']} {value['seconds']} s"
            for verb, value in found["statements"].items()
        )
        loop = found["loop_per_schedule"]
        lines += [
            "",
            f"{title}: {found['total_s']} s for {found['tasks']:,}"
            + (f" ({found['rows_written']:,} rows written)" if "rows_written" in found else "")
            + f": {steps}.",
            f"  statements (driver time): {statements}.",
            f"  loop per schedule: p50 {loop['p50_us']} us, p99 {loop['p99_us']} us, "
            f"max {loop['max_us']} us.",
        ]
    profile = summary.get("profile")
    if profile:
        lines += [
            "",
            f"cProfile of one more update ({profile['date']}, "
            f"{profile['seconds_under_profiler']} s under the profiler), own time by area:",
            "",
        ]
        lines += [
            f"- {area}: {value['seconds']} s ({value['share']:.0%})"
            for area, value in profile["areas_own_time"].items()
        ]
        lines += ["", "Functions with the most own time:", ""]
        lines += [
            f"- {entry['own_s']} s own, {entry['cum_s']} s cum, {entry['calls']:,} calls: "
            f"`{entry['function']}`"
            for entry in profile["top_own_time"]
        ]
    return "\n".join(lines)


# ---------------------------------------------------------------------- main


async def run(args: argparse.Namespace, created: list[str]) -> dict[str, Any]:
    name, url = await create_pg()
    created.append(name)
    database = Database(url)
    rng = random.Random(args.seed)
    try:
        with tempfile.TemporaryDirectory(prefix="apflow-calendars-bench-") as home:
            began = time.perf_counter()
            await database.upgrade()
            settings = Settings(home=Path(home), database_url=url)
            service = Service(settings, database, TaskRepository(database, settings=settings))
            row = await service.calendars.create(None, name=CALENDAR, holidays=HOLIDAYS)
            migrated = time.perf_counter()
            now = datetime.now(UTC)
            tasks = make_tasks(args.tasks, args.rule, store.closed_days(row), now, rng)
            computed = time.perf_counter()
            await copy_tasks(asyncpg_dsn(url), tasks, now, rng)
            copied = time.perf_counter()
            seed_detail = {
                "migrate_and_calendar_s": round(migrated - began, 2),
                "compute_next_run_s": round(computed - migrated, 2),
                "copy_and_vacuum_s": round(copied - computed, 2),
            }
            print(f"seeded {args.tasks:,} schedules: {seed_detail}", file=sys.stderr)
            by_id = {task.id: task for task in tasks}
            days = closing_days(store.closed_days(row), now.date(), 8)
            updates = []
            for number, day in enumerate(days[:3]):
                result = await timed_update(
                    service, asyncpg_dsn(url), by_id, day, args.rule, seed=number
                )
                print(f"update {number + 1}: {result}", file=sys.stderr)
                updates.append(result)
            best = min(run["seconds"] for run in updates)
            summary: dict[str, Any] = {
                "tasks": args.tasks,
                "rule": args.rule,
                "started_utc": now.strftime("%Y-%m-%d %H:%M"),
                "shapes": len(
                    {(t.schedule_type, t.schedule_expression, t.schedule_timezone) for t in tasks}
                ),
                "seed_seconds": round(copied - began, 2),
                "seed_detail": seed_detail,
                "load_before": args.load_before,
                "updates": updates,
                "update_best_seconds": best,
                "update_best_us_per_schedule": round(best * 1e6 / args.tasks, 1),
            }
            profile = args.profile == "on" or (args.profile == "auto" and best > TARGET_TOTAL_S)
            if profile:
                summary["profile"] = await profiled_update(service, days[3], args.top)
            if not args.no_steps:
                row_id = row.id
                summary["orm_steps"] = await orm_steps(database, row_id, days[4])
                print(f"orm steps: {summary['orm_steps']['seconds']}", file=sys.stderr)
                for key, only_moved, day in (
                    ("core_alternative", False, days[5]),
                    ("core_moved_only", True, days[6]),
                ):
                    summary[key] = await core_alternative(
                        database, row_id, day, only_moved=only_moved
                    )
                    print(f"{key}: {summary[key]['seconds']}", file=sys.stderr)
            summary["pure"] = pure_passes(tasks, days[7])
            loop_p99 = (summary.get("orm_steps") or {}).get("loop_per_schedule", {}).get("p99_us")
            worst_p99 = max(summary["pure"]["cold"]["p99_us"], loop_p99 or 0.0)
            summary["targets"] = {
                "total_s": TARGET_TOTAL_S,
                "p99_us": TARGET_P99_US,
                "total_met": best <= TARGET_TOTAL_S,
                "loop_p99_us": loop_p99,
                "p99_met": worst_p99 <= TARGET_P99_US,
            }
            summary["checks_ok"] = all(run["ok"] for run in updates)
            summary["load_after"] = round(os.getloadavg()[0], 2)
            return summary
    finally:
        await database.dispose()


def interrupted(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--rule", choices=RULES, default="next_business_day")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--profile",
        choices=("auto", "on", "off"),
        default="auto",
        help="one more update under cProfile (auto: when the best update misses 10 s)",
    )
    parser.add_argument("--top", type=int, default=20, help="functions listed by the profile")
    parser.add_argument(
        "--no-steps", action="store_true", help="skip the rolled-back step and Core measurements"
    )
    args = parser.parse_args()
    args.load_before = round(os.getloadavg()[0], 2)
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    created: list[str] = []
    try:
        summary = asyncio.run(run(args, created))
        print(markdown(summary))
        print(json.dumps(summary))
    finally:
        for name in created:
            asyncio.run(drop_pg(name))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
