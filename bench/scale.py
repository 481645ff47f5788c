"""Scale: 1,000,000 scheduled tasks in PostgreSQL. How long does claiming the due ones take,
and how much CPU does an idle scheduler burn?

    .venv/bin/python bench/scale.py --tasks 1000000 --rounds 200 --idle-seconds 60

The tasks are COPY-inserted as enabled schedules in a realistic mix (`--mix realistic`, the
default): 1 % every minute (cron `* * * * *`), a third hourly (cron at a minute of the hour),
a third daily and a third weekly at times of day in five zones; `--mix once` makes them all
`once` schedules at distinct instants instead (no two share a shape, so none of the claim's
schedule math is cached: the worst case). Their next runs are spread over the next year, so
none is due but the ones a round makes due. Each round makes 10 random tasks due and times
the due query alone (SELECT ... FOR UPDATE SKIP LOCKED on the partial index), then
`RunStore.claim_due(10)` (the whole claiming transaction: that query, history rows, schedule
updates and the commit's fsync), and `next_wake_at` (the query a scheduler sleeps on). Then
`apflow scheduler start` runs against the database for --idle-seconds with nothing due, and
its CPU time is read from /proc. Prints one JSON line.

The claim's time is also split (SQLAlchemy's cursor events around each statement of
`claim_due`): the due query, the write (history rows and tasks in one statement), and what is
outside the statements (BEGIN, COMMIT with its WAL flush, the schedule math and row building
in Python), each as p50/p99.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
from burst import create_pg, drop_pg, percentile
from sqlalchemy import event, update

from apflow_server.config import Settings
from apflow_server.core.types import RunStatus
from apflow_server.storage.database import Database
from apflow_server.storage.listener import asyncpg_dsn
from apflow_server.storage.models import Task
from apflow_server.storage.runs import RunResult, RunStore, claim_query

COLUMNS = (
    "id", "name", "status", "priority", "inputs", "params", "schemas", "dependencies",
    "progress", "created_at", "updated_at", "schedule_type", "schedule_expression",
    "schedule_timezone", "schedule_enabled", "run_count", "next_run_at", "due_at",
    "schedule_misfire", "schedule_overlap", "schedule_jitter_seconds",
)  # fmt: skip


ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Sydney")


def schedule_shape(rng: random.Random, index: int, when: datetime, mix: str) -> tuple[str, ...]:
    """(schedule_type, expression, zone) of the index-th task of the mix."""
    if mix == "once":
        return "once", when.isoformat(), "UTC"
    if index % 100 == 0:
        return "cron", "* * * * *", "UTC"
    hour, minute, zone = rng.randrange(24), rng.randrange(0, 60, 5), rng.choice(ZONES)
    kind = index % 3
    if kind == 0:
        return "cron", f"{minute} * * * *", zone
    if kind == 1:
        return "daily", f"{hour:02d}:{minute:02d}", zone
    return "weekly", f"{rng.randint(1, 7)} {hour:02d}:{minute:02d}", zone


async def copy_tasks(dsn: str, count: int, now: datetime, mix: str = "realistic") -> list[str]:
    """COPY `count` enabled schedules of the mix, next due at random times over the next year."""
    rng = random.Random(1)
    ids = [str(uuid.uuid4()) for _ in range(count)]
    connection = await asyncpg.connect(dsn)
    try:
        for start in range(0, count, 100_000):
            records = []
            for index, task_id in enumerate(ids[start : start + 100_000], start):
                when = now + timedelta(seconds=rng.randint(3600, 365 * 86400))
                kind, expression, zone = schedule_shape(rng, index, when, mix)
                records.append(
                    (
                        task_id, "scale", "pending", 2, "{}", '{"executor_id": "echo_executor"}',
                        "{}", "[]", 0.0, now, now, kind, expression, zone, True, 0,
                        when, when, "run_once", "skip", 0,
                    )
                )  # fmt: skip
            await connection.copy_records_to_table("tasks", records=records, columns=COLUMNS)
        await connection.execute("ANALYZE tasks")
    finally:
        await connection.close()
    return ids


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def watch_statements(database: Database) -> list[float]:
    """A list that gets the duration of every statement the database's engine runs (the
    caller clears it before the part it times)."""
    durations: list[float] = []
    began: list[float] = []

    def before(*_: object) -> None:
        began.append(time.perf_counter())

    def after(*_: object) -> None:
        durations.append(time.perf_counter() - began.pop())

    event.listen(database.engine.sync_engine, "before_cursor_execute", before)
    event.listen(database.engine.sync_engine, "after_cursor_execute", after)
    return durations


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--per-round", type=int, default=10)
    parser.add_argument("--idle-seconds", type=float, default=60)
    parser.add_argument("--mix", choices=("realistic", "once"), default="realistic")
    args = parser.parse_args()

    name, url = await create_pg()
    database = Database(url)
    try:
        await database.upgrade()
        now = datetime.now(UTC)
        began = time.monotonic()
        ids = await copy_tasks(asyncpg_dsn(url), args.tasks, now, args.mix)
        inserted_in = time.monotonic() - began
        store = RunStore(database, Settings(home=Path("/tmp"), database_url=url), "bench")
        # Distinct tasks every round (a claimed `once` is disabled and would not be due again).
        pool = random.Random(2).sample(ids, args.rounds * args.per_round)
        claims: list[float] = []
        statements = watch_statements(database)
        split: dict[str, list[float]] = {
            "due query": [], "write": [], "outside the statements": []
        }  # fmt: skip
        queries: list[float] = []
        wakes: list[float] = []
        for round_ in range(args.rounds):
            chosen = pool[round_ * args.per_round : (round_ + 1) * args.per_round]
            due = datetime.now(UTC) - timedelta(seconds=1)
            async with database.transaction(write=True) as session:
                await session.execute(
                    update(Task).where(Task.id.in_(chosen)).values(next_run_at=due, due_at=due)
                )
            async with database.transaction(write=True) as session:
                started = time.perf_counter()
                # The claim's own statement (storage/runs.py), run as claim_due runs it.
                query, parameters = claim_query(datetime.now(UTC), None, args.per_round)
                rows = (await session.execute(query, parameters)).all()
                queries.append(time.perf_counter() - started)
                assert len(rows) == args.per_round
                await session.rollback()
            statements.clear()
            started = time.perf_counter()
            claimed = await store.claim_due(args.per_round)
            claims.append(time.perf_counter() - started)
            if len(statements) == 2:  # the due query and the write (no redo, no manual look)
                split["due query"].append(statements[0])
                split["write"].append(statements[1])
                split["outside the statements"].append(claims[-1] - sum(statements))
            assert len(claimed) == args.per_round, len(claimed)
            # Record them done, so the idle scheduler below finds no leases to reclaim.
            await store.finish_many([(run, RunResult(RunStatus.COMPLETED)) for run in claimed])
            started = time.perf_counter()
            await store.next_wake_at()
            wakes.append(time.perf_counter() - started)
        await database.dispose()

        env = {**os.environ, "APFLOW_DATABASE_URL": url, "APFLOW_HOME": "/tmp/apflow-scale"}
        scheduler = subprocess.Popen(
            [sys.executable, "-m", "apflow_server.cli.main", "scheduler", "start"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            await asyncio.sleep(5)  # started, first poll done
            before = cpu_seconds(scheduler.pid)
            await asyncio.sleep(args.idle_seconds)
            idle_cpu = cpu_seconds(scheduler.pid) - before
        finally:
            scheduler.terminate()
            scheduler.wait(timeout=30)
        print(
            json.dumps(
                {
                    "tasks": args.tasks,
                    "mix": args.mix,
                    "copy_seconds": round(inserted_in, 1),
                    "rounds": args.rounds,
                    "claimed_per_round": args.per_round,
                    "due_query_p50_ms": round(percentile(queries, 0.5) * 1000, 2),
                    "due_query_p99_ms": round(percentile(queries, 0.99) * 1000, 2),
                    "claim_p50_ms": round(percentile(claims, 0.5) * 1000, 2),
                    "claim_p99_ms": round(percentile(claims, 0.99) * 1000, 2),
                    "claim_max_ms": round(max(claims) * 1000, 2),
                    "claim_split_ms": {
                        part: [
                            round(percentile(times, 0.5) * 1000, 2),
                            round(percentile(times, 0.99) * 1000, 2),
                        ]
                        for part, times in split.items()
                        if times
                    },
                    "next_wake_p50_ms": round(percentile(wakes, 0.5) * 1000, 2),
                    "next_wake_p99_ms": round(percentile(wakes, 0.99) * 1000, 2),
                    "idle_seconds": args.idle_seconds,
                    "idle_cpu_seconds": round(idle_cpu, 3),
                    "idle_cpu_percent": round(100 * idle_cpu / args.idle_seconds, 3),
                }
            )
        )
    finally:
        await database.dispose()
        await drop_pg(name)


if __name__ == "__main__":
    asyncio.run(main())
