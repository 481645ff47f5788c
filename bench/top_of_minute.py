"""The top of the minute: N tasks on `* * * * *` for M minutes with P scheduler processes.
Every occurrence exactly once, lateness percentiles per minute (started_at - scheduled_for,
by the database's clock), and the size of the run history under a retention of K runs per
task (APFLOW_RUN_HISTORY_KEEP), sampled every minute.

    .venv/bin/python bench/top_of_minute.py --tasks 10000 --minutes 10 --processes 2 --keep 3

Each process may execute tasks / processes runs at once unless --max-concurrent says
otherwise: with fewer slots than runs due at one instant, the last ones wait for a slot, and
lateness measures how fast the slots turn over rather than how fast the scheduler starts runs.

Targets: p99 lateness < 1.5 s every minute, 0 duplicates, the runs table flat under retention.
Prints a Markdown table, then one JSON line. The database is dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from burst import create_pg, drop_pg, percentile, stop_processes
from scale import COLUMNS

from apflow_server.storage.database import Database
from apflow_server.storage.listener import asyncpg_dsn


async def copy_every_minute(dsn: str, count: int, first: datetime) -> None:
    now = datetime.now(UTC)
    records = [
        (
            str(uuid.uuid4()), f"minutely-{index}", "pending", 2, "{}",
            '{"executor_id": "echo_executor"}', "{}", "[]", 0.0, now, now, "cron",
            "* * * * *", "UTC", True, 0, first, first, "run_once", "skip", 0,
        )
        for index in range(count)
    ]  # fmt: skip
    connection = await asyncpg.connect(dsn)
    try:
        await connection.copy_records_to_table("tasks", records=records, columns=COLUMNS)
        await connection.execute("VACUUM ANALYZE tasks")
    finally:
        await connection.close()


async def history_rows(dsn: str) -> int:
    connection = await asyncpg.connect(dsn)
    try:
        return int(await connection.fetchval("SELECT count(*) FROM task_runs"))
    finally:
        await connection.close()


async def minutes_between(dsn: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Runs and lateness of each minute from `start` up to `end`, read while the history
    still holds them (retention prunes a minute's rows a few minutes later)."""
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch(
            "SELECT scheduled_for, extract(epoch FROM started_at - scheduled_for) AS late, "
            "status FROM task_runs WHERE scheduled_for >= $1 AND scheduled_for < $2",
            start,
            end,
        )
    finally:
        await connection.close()
    minutes: dict[datetime, list[float]] = {}
    statuses: dict[datetime, dict[str, int]] = {}
    for row in rows:
        minutes.setdefault(row["scheduled_for"], []).append(float(row["late"] or 0.0))
        counts = statuses.setdefault(row["scheduled_for"], {})
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return [
        {
            "minute": minute.astimezone(UTC).strftime("%H:%M"),
            "runs": len(late),
            "statuses": statuses[minute],
            "p50_ms": round(percentile(late, 0.5) * 1000, 1),
            "p99_ms": round(percentile(late, 0.99) * 1000, 1),
            "max_ms": round(max(late) * 1000, 1),
        }
        for minute, late in sorted(minutes.items())
    ]


async def runs_counted(dsn: str) -> int:
    """Runs the tasks counted (run_count): a run fired twice would count twice here, though
    the history's unique key lets only one of its rows in."""
    connection = await asyncpg.connect(dsn)
    try:
        return int(await connection.fetchval("SELECT coalesce(sum(run_count), 0) FROM tasks"))
    finally:
        await connection.close()


async def run(args: argparse.Namespace, created: list[str]) -> dict[str, Any]:
    name, url = await create_pg()
    created.append(name)
    database = Database(url)
    await database.upgrade()
    await database.dispose()
    dsn = asyncpg_dsn(url)
    first = (datetime.now(UTC) + timedelta(minutes=1)).replace(second=0, microsecond=0)
    if (first - datetime.now(UTC)).total_seconds() < 20:
        first += timedelta(minutes=1)
    await copy_every_minute(dsn, args.tasks, first)
    home = tempfile.mkdtemp(prefix="apflow-minute-")
    env = {
        **os.environ,
        "APFLOW_DATABASE_URL": url,
        "APFLOW_HOME": home,
        "APFLOW_RUN_HISTORY_KEEP": str(args.keep),
    }
    command = [
        sys.executable, "-m", "apflow_server.cli.main", "scheduler", "start",
        "--poll-interval", "60", "--max-concurrent", str(args.max_concurrent),
    ]  # fmt: skip
    processes = [
        subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(args.processes)
    ]
    sizes: list[int] = []
    table: list[dict[str, Any]] = []
    read_up_to = first
    end = first + timedelta(minutes=args.minutes)
    try:
        while datetime.now(UTC) < end + timedelta(seconds=30):
            await asyncio.sleep((40 - datetime.now(UTC).second) % 60 or 60)  # at :40
            sizes.append(await history_rows(dsn))
            # The minute before this one has fired in full by now (lateness is seconds).
            this_minute = datetime.now(UTC).replace(second=0, microsecond=0)
            upto = min(this_minute, end)
            if upto > read_up_to:
                table += await minutes_between(dsn, read_up_to, upto)
                read_up_to = upto
            print(f"history rows: {sizes[-1]:,}", file=sys.stderr, flush=True)
    finally:
        stop_processes(processes)
    # and whatever fired before the schedulers stopped (the minute at `end` too)
    table += await minutes_between(dsn, read_up_to, end + timedelta(days=1))
    # Each occurrence's row was read once, before retention pruned it; run_count counts every
    # run a task started, so anything it counts beyond those rows ran twice.
    counted = await runs_counted(dsn)
    recorded = sum(row["runs"] for row in table)
    fired = sum(
        row["statuses"].get("running", 0) + row["statuses"].get("completed", 0) for row in table
    )
    duplicates = counted - fired
    return {
        "tasks": args.tasks,
        "minutes": args.minutes,
        "processes": args.processes,
        "keep": args.keep,
        "max_concurrent": args.max_concurrent,
        "first_minute": first.strftime("%H:%M"),
        "duplicates": duplicates,
        "runs_counted": counted,
        "history_rows_read": recorded,
        "per_minute": table,
        "history_rows_each_minute": sizes,
        "worst_minute_p99_ms": max(row["p99_ms"] for row in table) if table else None,
    }


def markdown(summary: dict[str, Any]) -> str:
    lines = [
        f"{summary['tasks']:,} tasks on `* * * * *`, {summary['processes']} scheduler "
        f"processes (--max-concurrent {summary['max_concurrent']:,} each), "
        f"APFLOW_RUN_HISTORY_KEEP={summary['keep']}; duplicates: "
        f"{summary['duplicates']}",
        "",
        "| minute (UTC) | runs | p50 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in summary["per_minute"]:
        lines.append(
            f"| {row['minute']} | {row['runs']:,} | {row['p50_ms']} | {row['p99_ms']} | "
            f"{row['max_ms']} |"
        )
    sizes = ", ".join(f"{size:,}" for size in summary["history_rows_each_minute"])
    lines += ["", f"History rows, sampled each minute: {sizes}"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--keep", type=int, default=3, help="APFLOW_RUN_HISTORY_KEEP")
    parser.add_argument(
        "--max-concurrent",
        type=int,
        default=None,
        help="runs each scheduler process executes at once; by default sized to the burst "
        "(tasks / processes), so lateness measures the scheduler rather than a queue of slots",
    )
    args = parser.parse_args()
    if args.max_concurrent is None:
        args.max_concurrent = -(-args.tasks // args.processes)
    created: list[str] = []
    began = time.monotonic()
    try:
        summary = asyncio.run(run(args, created))
        summary["wall_seconds"] = round(time.monotonic() - began, 1)
        print(markdown(summary))
        print(json.dumps(summary))
    finally:
        for name in created:
            asyncio.run(drop_pg(name))


if __name__ == "__main__":
    main()
