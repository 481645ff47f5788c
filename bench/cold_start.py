"""Cold start and memory against many schedules: a scheduler process started against N enabled
schedules (COPY-inserted, none due but one) fires that one: how long from starting the
process to its run being recorded, and the process's resident memory then and after idling.

    .venv/bin/python bench/cold_start.py --tasks 10000,100000,1000000

Targets: first run within 2 s at 1,000,000 schedules; RSS at 1,000,000 within 1.5x of the
RSS at 10,000. The time includes the interpreter starting and importing the service (shown
separately: `apflow --version`'s wall time). Prints one JSON line per size.
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
from datetime import UTC, datetime, timedelta
from pathlib import Path

from burst import create_pg, drop_pg
from scale import copy_tasks
from sqlalchemy import func, select, update

from apflow_server.storage.database import Database
from apflow_server.storage.listener import asyncpg_dsn
from apflow_server.storage.models import Task, TaskRun


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def one_size(count: int, idle: float) -> dict[str, float | int]:
    name, url = await create_pg()
    database = Database(url)
    try:
        await database.upgrade()
        ids = await copy_tasks(asyncpg_dsn(url), count, datetime.now(UTC))
        due = datetime.now(UTC) - timedelta(seconds=1)
        async with database.transaction(write=True) as session:
            await session.execute(
                update(Task).where(Task.id == ids[0]).values(next_run_at=due, due_at=due)
            )
        home = tempfile.mkdtemp(prefix="apflow-cold-")
        env = {**os.environ, "APFLOW_DATABASE_URL": url, "APFLOW_HOME": home}
        command = [sys.executable, "-m", "apflow_server.cli.main", "scheduler", "start"]
        began = time.monotonic()
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            while True:
                async with database.transaction() as session:
                    done = await session.scalar(select(func.count()).select_from(TaskRun))
                if done:
                    break
                if time.monotonic() - began > 60:
                    raise TimeoutError("no run within 60 s")
                await asyncio.sleep(0.02)
            first_run = time.monotonic() - began
            at_first = rss_mb(process.pid)
            await asyncio.sleep(idle)
            after_idle = rss_mb(process.pid)
        finally:
            process.terminate()
            process.wait(timeout=30)
        return {
            "tasks": count,
            "first_run_s": round(first_run, 2),
            "rss_at_first_run_mb": round(at_first, 1),
            "rss_after_idle_mb": round(after_idle, 1),
        }
    finally:
        await database.dispose()
        await drop_pg(name)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", default="10000,100000,1000000")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds idle before RSS")
    args = parser.parse_args()
    began = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "apflow_server.cli.main", "--version"],
        check=True,
        capture_output=True,
    )
    print(json.dumps({"cli_start_s": round(time.monotonic() - began, 2)}))
    for count in (int(part) for part in args.tasks.split(",")):
        print(json.dumps(asyncio.run(one_size(count, args.idle))), flush=True)


if __name__ == "__main__":
    main()
