"""Burst and lateness: N tasks due at the same instant (or spread over --spread seconds),
echo executor: runs per second until all are recorded, and how late each started.

    .venv/bin/python bench/burst.py --db sqlite --tasks 1000
    .venv/bin/python bench/burst.py --db postgresql --tasks 10000 --processes 2

    .venv/bin/python bench/burst.py --db postgresql --tasks 10000 --pgbouncer

Each scheduler is a real OS process (`apflow scheduler start`, poll_interval 60). The database
is created for the run (a temporary SQLite file, or a fresh PostgreSQL database that is dropped
afterwards). Prints one JSON line of figures.
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
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import func, insert, select, text

# The tests' PgBouncer starter (tests/pgbouncer_server.py) serves --pgbouncer too.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from pgbouncer_server import pgbouncer, through

from apflow_server.storage.database import Database
from apflow_server.storage.models import Task, TaskRun

ADMIN_URL = os.environ.get(
    "APFLOW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


async def create_pg() -> tuple[str, str]:
    name = f"apflow_bench_{uuid.uuid4().hex[:10]}"
    connection = await asyncpg.connect(ADMIN_URL)
    await connection.execute(f'CREATE DATABASE "{name}"')
    await connection.close()
    return name, ADMIN_URL.rsplit("/", 1)[0] + "/" + name


async def drop_pg(name: str) -> None:
    connection = await asyncpg.connect(ADMIN_URL)
    await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await connection.close()


def stop_processes(processes: list[subprocess.Popen[bytes]], timeout: float = 30) -> None:
    """SIGTERM to each (they stop gracefully), then a kill for any still there after
    `timeout` seconds."""
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()


async def seed(
    database: Database,
    count: int,
    due: datetime,
    spread: float = 0.0,
    *,
    executor: str = "echo_executor",
    inputs_of: Callable[[int, datetime], dict[str, Any]] = lambda index, when: {"n": index},
) -> None:
    """Bulk-insert `count` enabled once-schedules due at `due` (over `spread` seconds when
    given), each running `executor` with `inputs_of(index, instant)`; the repository's
    validation is not what this measures."""
    now = datetime.now(UTC)

    def when(index: int) -> datetime:
        return due + timedelta(seconds=spread * index / count)

    rows = [
        {
            "id": str(uuid.uuid4()),
            "name": f"burst-{index}",
            "status": "pending",
            "priority": 2,
            "inputs": inputs_of(index, when(index)),
            "params": {"executor_id": executor},
            "schemas": {},
            "dependencies": [],
            "progress": 0.0,
            "created_at": now,
            "updated_at": now,
            "schedule_type": "once",
            "schedule_expression": when(index).isoformat(),
            "schedule_timezone": "UTC",
            "schedule_enabled": True,
            "run_count": 0,
            "next_run_at": when(index),
            "due_at": when(index),
            "schedule_misfire": "run_once",
            "schedule_overlap": "skip",
            "schedule_jitter_seconds": 0,
        }
        for index in range(count)
    ]
    async with database.transaction(write=True) as session:
        for start in range(0, len(rows), 2000):
            await session.execute(insert(Task), rows[start : start + 2000])


async def wait_for_runs(database: Database, count: int, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with database.transaction() as session:
            done = await session.scalar(
                select(func.count()).select_from(TaskRun).where(TaskRun.status == "completed")
            )
        if (done or 0) >= count:
            return time.monotonic()
        await asyncio.sleep(0.05)
    raise TimeoutError(f"only {done} of {count} runs completed")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--max-concurrent", type=int, default=100)
    parser.add_argument("--lead", type=float, default=4.0, help="seconds until the burst")
    parser.add_argument(
        "--spread", type=float, default=0.0, help="spread the due times over this many seconds"
    )
    parser.add_argument(
        "--pgbouncer",
        action="store_true",
        help="the schedulers connect through a PgBouncer in transaction pooling (started for "
        "the run: Debian's pgbouncer, as the tests start it) with APFLOW_DATABASE_POOLER",
    )
    args = parser.parse_args()
    if args.pgbouncer and args.db != "postgresql":
        parser.error("--pgbouncer needs --db postgresql")
    with ExitStack() as stack:  # PgBouncer runs outside the event loop of the run
        pooler = stack.enter_context(pgbouncer()) if args.pgbouncer else None
        asyncio.run(run(args, pooler))


async def run(args: argparse.Namespace, pooler: str | None) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="apflow-bench-"))
    pg_name = None
    if args.db == "sqlite":
        url = f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
    else:
        pg_name, url = await create_pg()
    database = Database(url)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        await database.upgrade()
        due = (datetime.now(UTC) + timedelta(seconds=args.lead + 2)).replace(microsecond=0)
        await seed(database, args.tasks, due, args.spread)
        env = {**os.environ, "APFLOW_DATABASE_URL": url, "APFLOW_HOME": str(workdir)}
        if pooler is not None and pg_name is not None:
            env["APFLOW_DATABASE_URL"] = through(pooler, pg_name)
            env["APFLOW_DATABASE_POOLER"] = "transaction"
        command = [
            sys.executable,
            "-m",
            "apflow_server.cli.main",
            "scheduler",
            "start",
            "--poll-interval",
            "60",
            "--max-concurrent",
            str(args.max_concurrent),
        ]
        for index in range(args.processes):
            log = open(workdir / f"scheduler-{index}.log", "wb")
            processes.append(subprocess.Popen(command, env=env, stdout=log, stderr=log))
        finished = await wait_for_runs(database, args.tasks, timeout=600)
        connections = None
        updates: dict[str, dict[str, int]] = {}
        if pg_name is not None:  # what the schedulers hold, the bench's own one excluded
            async with database.transaction() as session:
                held = await session.scalar(
                    text(
                        "SELECT count(*) - 1 FROM pg_stat_activity "
                        "WHERE datname = current_database()"
                    )
                )
            connections = int(held or 0)
            await asyncio.sleep(1.0)  # statistics reach pg_stat_user_tables within a second
            async with database.transaction() as session:
                counts = (
                    await session.execute(
                        text(
                            "SELECT relname, n_tup_upd, n_tup_hot_upd, n_dead_tup "
                            "FROM pg_stat_user_tables WHERE relname IN ('tasks', 'task_runs')"
                        )
                    )
                ).all()
            updates = {
                row[0]: {"updates": row[1], "hot_updates": row[2], "dead_tuples": row[3]}
                for row in counts
            }
        elapsed = finished - (time.monotonic() - (datetime.now(UTC) - due).total_seconds())
        async with database.transaction() as session:
            runs = list(await session.scalars(select(TaskRun)))
        lateness = [(r.started_at - r.scheduled_for).total_seconds() for r in runs]
        last_finish = max(r.finished_at for r in runs)
        duplicates = len(runs) - len({(r.task_id, r.scheduled_for) for r in runs})
        span = (last_finish - due).total_seconds()
        print(
            json.dumps(
                {
                    "database": args.db + (" via pgbouncer" if pooler else ""),
                    "tasks": args.tasks,
                    "spread_seconds": args.spread,
                    "processes": args.processes,
                    "max_concurrent": args.max_concurrent,
                    "runs_recorded": len(runs),
                    "duplicates": duplicates,
                    "seconds_until_all_recorded": round(span, 3),
                    "runs_per_second": round(len(runs) / span, 1),
                    "lateness_p50_ms": round(percentile(lateness, 0.5) * 1000, 1),
                    "lateness_p99_ms": round(percentile(lateness, 0.99) * 1000, 1),
                    "lateness_max_ms": round(max(lateness) * 1000, 1),
                    "wall_clock_check_s": round(elapsed, 1),
                    "server_connections_after": connections,
                    "table_updates": updates,
                }
            )
        )
    finally:
        stop_processes(processes)
        await database.dispose()
        if pg_name:
            await drop_pg(pg_name)


if __name__ == "__main__":
    main()
