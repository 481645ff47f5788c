"""Notification delivery throughput, and what it does to the lateness of schedules meanwhile.

    .venv/bin/python bench/notify.py --events 10000

One scheduler process (`apflow scheduler start`, poll 60 s) on a fresh PostgreSQL database
delivers to a local sink (bench/sink.py, its own process). First, idle: 200 once-schedules due
over 10 s, their lateness measured (`started_at - scheduled_for`). Then 200 more, due over the
10 s in which N events are written to the outbox in one transaction (as a burst of failures
would write them): deliveries per second until the sink has received all N (each signed, as
in production), and the other schedules' lateness meanwhile. Prints one JSON line.
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
from http_work import SinkProcess
from sqlalchemy import func, select

from apflow_server.config import Settings
from apflow_server.core.events import PING, Event
from apflow_server.service import Service
from apflow_server.storage import notifications
from apflow_server.storage.database import Database
from apflow_server.storage.models import NotificationDelivery, TaskRun
from apflow_server.storage.repository import TaskRepository

OTHERS = 200
SPREAD = 10.0
KEY = "bench"


async def lateness_of_others(
    database: Database, since: datetime, before: datetime
) -> list[tuple[datetime, float]]:
    async with database.transaction() as session:
        runs = await session.scalars(
            select(TaskRun).where(
                TaskRun.trigger == "schedule",
                TaskRun.scheduled_for >= since,
                TaskRun.scheduled_for < before,
            )
        )
        return [
            (r.scheduled_for, (r.started_at - r.scheduled_for).total_seconds())
            for r in runs
            if r.started_at
        ]


async def delivered(database: Database) -> int:
    async with database.transaction() as session:
        found = await session.scalar(
            select(func.count())
            .select_from(NotificationDelivery)
            .where(NotificationDelivery.status == "delivered")
        )
        return int(found or 0)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument(
        "--mode",
        choices=("process", "thread", "worker"),
        default="process",
        help="who delivers: the scheduler's child process (the default), a thread in the "
        "scheduler's process, or an `apflow notify worker` beside a scheduler started with "
        "APFLOW_NOTIFY_IN_SCHEDULER=off",
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="apflow-bench-"))
    pg_name, url = await create_pg()
    database = Database(url)
    settings = Settings(
        home=workdir, database_url=url, secret_key=KEY, notify_allow_private_urls=True
    )
    service = Service(settings, database, TaskRepository(database, settings=settings))
    sink = SinkProcess()
    process = worker = None
    try:
        await database.upgrade()
        created = await service.notifications.create(None, url=f"{sink.url}/hook")
        idle_from = (datetime.now(UTC) + timedelta(seconds=6)).replace(microsecond=0)
        loaded_from = idle_from + timedelta(seconds=SPREAD + 4)
        await seed(database, OTHERS, idle_from, SPREAD)
        await seed(database, OTHERS, loaded_from, SPREAD)
        env = {
            **os.environ,
            "APFLOW_DATABASE_URL": url,
            "APFLOW_HOME": str(workdir),
            "APFLOW_SECRET_KEY": KEY,
            "APFLOW_NOTIFY_ALLOW_PRIVATE_URLS": "1",
        }
        command = [
            sys.executable, "-m", "apflow_server.cli.main", "scheduler", "start",
            "--poll-interval", "60", "--max-concurrent", "100",
        ]  # fmt: skip
        log = open(workdir / "scheduler.log", "wb")
        env["APFLOW_NOTIFY_IN_SCHEDULER"] = "off" if args.mode == "worker" else args.mode
        if args.mode == "worker":
            worker_command = [sys.executable, "-m", "apflow_server.cli.main", "notify", "worker"]
            worker = subprocess.Popen(worker_command, env=env, stdout=log, stderr=log)
        process = subprocess.Popen(command, env=env, stdout=log, stderr=log)
        await asyncio.sleep((loaded_from - datetime.now(UTC)).total_seconds())
        idle = await lateness_of_others(database, idle_from, loaded_from)

        events = [
            Event(PING, None, {"n": n}, endpoint_id=created.endpoint.id) for n in range(args.events)
        ]
        began = time.monotonic()
        enqueued_at = datetime.now(UTC)
        async with database.transaction(write=True) as session:
            queued = await notifications.enqueue(session, events, datetime.now(UTC))
        assert queued == args.events
        sink.wait_for(args.events, timeout=600)
        took = time.monotonic() - began
        while await delivered(database) < args.events:  # recorded, too
            await asyncio.sleep(0.05)
        recorded = time.monotonic() - began
        await asyncio.sleep(max(0.0, SPREAD + 2 - took))
        loaded = await lateness_of_others(database, loaded_from, loaded_from + timedelta(1))
        records = sink.stop()
        idle_s = [late for _, late in idle]
        loaded_s = [late for _, late in loaded]
        print(
            json.dumps(
                {
                    "delivered_by": args.mode,
                    "events": args.events,
                    "arrived_at_sink": len(records),
                    "seconds_until_all_arrived": round(took, 2),
                    "deliveries_per_second": round(args.events / took, 1),
                    "seconds_until_all_recorded_delivered": round(recorded, 2),
                    "others_idle_p99_ms": round(percentile(idle_s, 0.99) * 1000, 1),
                    "others_during_delivery_p50_ms": round(percentile(loaded_s, 0.5) * 1000, 1),
                    "others_during_delivery_p95_ms": round(percentile(loaded_s, 0.95) * 1000, 1),
                    "others_during_delivery_p99_ms": round(percentile(loaded_s, 0.99) * 1000, 1),
                    # the latest starts: (seconds after the events were written, lateness ms)
                    "others_latest": [
                        (round((due - enqueued_at).total_seconds(), 2), round(late * 1000, 1))
                        for due, late in sorted(loaded, key=lambda pair: -pair[1])[:4]
                    ],
                    "others_measured": [len(idle), len(loaded)],
                }
            )
        )
    finally:
        for child in (process, worker):
            if child is not None:
                child.send_signal(signal.SIGTERM)
                try:
                    child.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    child.kill()
        if sink.process.poll() is None:
            sink.process.kill()
        await database.dispose()
        await drop_pg(pg_name)


if __name__ == "__main__":
    asyncio.run(main())
