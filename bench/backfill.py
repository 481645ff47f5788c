"""Backfill throughput, and what it does to the lateness of other schedules meanwhile.

    .venv/bin/python bench/backfill.py --occurrences 10000 --max-concurrent 100

One scheduler process (`apflow scheduler start --max-concurrent 100`, poll 60 s) on a fresh
PostgreSQL database. First, idle: 200 once-schedules due over 10 s, their lateness measured
(`started_at - scheduled_for`). Then 200 more, due over the 10 s in which a backfill of N
occurrences of an echo task (max_concurrent as given) starts: occurrences per second until
all are recorded completed, and the other schedules' lateness. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from burst import create_pg, drop_pg, percentile, seed
from sqlalchemy import func, select

from apflow_server.config import Settings
from apflow_server.service import Service
from apflow_server.storage.database import Database
from apflow_server.storage.models import TaskRun
from apflow_server.storage.repository import TaskRepository

OTHERS = 200
SPREAD = 10.0


async def lateness_of_others(database: Database, since: datetime, before: datetime) -> list[float]:
    async with database.transaction() as session:
        runs = await session.scalars(
            select(TaskRun).where(
                TaskRun.trigger == "schedule",
                TaskRun.scheduled_for >= since,
                TaskRun.scheduled_for < before,
            )
        )
        return [(r.started_at - r.scheduled_for).total_seconds() for r in runs if r.started_at]


async def completed(database: Database, trigger: str) -> int:
    async with database.transaction() as session:
        found = await session.scalar(
            select(func.count())
            .select_from(TaskRun)
            .where(TaskRun.trigger == trigger, TaskRun.status == "completed")
        )
        return int(found or 0)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--occurrences", type=int, default=10_000)
    parser.add_argument("--max-concurrent", type=int, default=100)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="apflow-bench-"))
    pg_name, url = await create_pg()
    database = Database(url)
    settings = Settings(home=workdir, database_url=url, max_backfill_occurrences=args.occurrences)
    service = Service(settings, database, TaskRepository(database, settings=settings))
    process = None
    try:
        await database.upgrade()
        # The others, seeded before the scheduler starts (it finds them when it starts): one
        # batch due over the idle window, one over the window the backfill runs in.
        idle_from = (datetime.now(UTC) + timedelta(seconds=6)).replace(microsecond=0)
        loaded_from = idle_from + timedelta(seconds=SPREAD + 4)
        await seed(database, OTHERS, idle_from, SPREAD)
        await seed(database, OTHERS, loaded_from, SPREAD)
        env = {**os.environ, "APFLOW_DATABASE_URL": url, "APFLOW_HOME": str(workdir)}
        command = [
            sys.executable, "-m", "apflow_server.cli.main", "scheduler", "start",
            "--poll-interval", "60", "--max-concurrent", str(args.max_concurrent),
        ]  # fmt: skip
        log = open(workdir / "scheduler.log", "wb")
        process = subprocess.Popen(command, env=env, stdout=log, stderr=log)
        await asyncio.sleep((loaded_from - datetime.now(UTC)).total_seconds())
        idle = await lateness_of_others(database, idle_from, loaded_from)

        (task,) = await service.tasks.create(
            None,
            [{"name": "backfilled", "params": {"executor_id": "echo_executor"},
              "schedule_type": "interval", "schedule_expression": "60",
              "schedule_start_at": "2020-01-01T00:00:00Z"}],
            batch=False,
        )  # fmt: skip
        start = datetime(2020, 1, 1, tzinfo=UTC)
        began = time.monotonic()
        await service.schedules.backfill(
            None,
            task.id,
            start=start.isoformat(),
            end=(start + timedelta(minutes=args.occurrences)).isoformat(),
            max_concurrent=args.max_concurrent,
        )
        while await completed(database, "backfill") < args.occurrences:
            if time.monotonic() - began > 600:
                raise TimeoutError("the backfill did not finish in 10 minutes")
            await asyncio.sleep(0.05)
        took = time.monotonic() - began
        await asyncio.sleep(max(0.0, SPREAD + 2 - took))
        loaded = await lateness_of_others(database, loaded_from, loaded_from + timedelta(1))
        async with database.transaction() as session:
            per_occurrence = await session.scalar(
                select(func.count(func.distinct(TaskRun.scheduled_for))).where(
                    TaskRun.task_id == task.id
                )
            )
        print(
            json.dumps(
                {
                    "occurrences": args.occurrences,
                    "max_concurrent": args.max_concurrent,
                    "distinct_occurrences_recorded": per_occurrence,
                    "seconds": round(took, 2),
                    "occurrences_per_second": round(args.occurrences / took, 1),
                    "others_idle_p99_ms": round(percentile(idle, 0.99) * 1000, 1),
                    "others_during_backfill_p99_ms": round(percentile(loaded, 0.99) * 1000, 1),
                    "others_measured": [len(idle), len(loaded)],
                }
            )
        )
    finally:
        if process is not None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        await database.dispose()
        await drop_pg(pg_name)


if __name__ == "__main__":
    asyncio.run(main())
